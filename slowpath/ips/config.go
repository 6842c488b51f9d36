package ips

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/palisade/palisade/slowpath/inspect/stream"
	"github.com/palisade/palisade/slowpath/ips/rule"
)

// Config is the part of a suricata.yaml-style file the IPS reads:
//
//	vars:
//	  address-groups:
//	    HOME_NET: "[10.0.0.0/8,192.168.0.0/16]"
//	    EXTERNAL_NET: "!$HOME_NET"
//	  port-groups:
//	    HTTP_PORTS: "[80,8080]"
//	stream:
//	  reassembly:
//	    depth: 1mb
//	classification-file: /etc/palisade/classification.config
//
// Other keys are ignored, so a real suricata.yaml can be given as is.
type Config struct {
	Vars            rule.Vars
	StreamDepth     int // bytes; 0 means stream.DefaultDepth
	Classifications Classifications
}

type yamlConfig struct {
	Vars struct {
		AddressGroups map[string]yamlScalar `yaml:"address-groups"`
		PortGroups    map[string]yamlScalar `yaml:"port-groups"`
	} `yaml:"vars"`
	Stream struct {
		Reassembly struct {
			Depth string `yaml:"depth"`
		} `yaml:"reassembly"`
	} `yaml:"stream"`
	ClassificationFile string `yaml:"classification-file"`
}

// yamlScalar accepts a string or a number (port-groups often hold 80).
type yamlScalar string

func (s *yamlScalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a string", n.Line)
	}
	*s = yamlScalar(n.Value)
	return nil
}

// DefaultConfig has Suricata's default variables and the standard
// classifications.
func DefaultConfig() *Config {
	return &Config{
		Vars: rule.Vars{
			Addresses: map[string]string{
				"HOME_NET":     "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
				"EXTERNAL_NET": "!$HOME_NET",
				"HTTP_SERVERS": "$HOME_NET", "SMTP_SERVERS": "$HOME_NET", "SQL_SERVERS": "$HOME_NET",
				"DNS_SERVERS": "$HOME_NET", "TELNET_SERVERS": "$HOME_NET",
			},
			Ports: map[string]string{
				"HTTP_PORTS": "80", "SHELLCODE_PORTS": "!80", "ORACLE_PORTS": "1521",
				"SSH_PORTS": "22", "FTP_PORTS": "21",
			},
		},
		Classifications: DefaultClassifications(),
	}
}

// LoadConfig reads a config file over the defaults: variables it defines
// replace the default ones of the same name.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ips config: %w", err)
	}
	// suricata.yaml starts with a YAML 1.1 directive yaml.v3 rejects.
	data = bytes.TrimPrefix(data, []byte("%YAML 1.1\n"))
	var y yamlConfig
	if err := yaml.Unmarshal(data, &y); err != nil {
		return nil, fmt.Errorf("ips config %s: %w", path, err)
	}
	c := DefaultConfig()
	for k, v := range y.Vars.AddressGroups {
		c.Vars.Addresses[k] = string(v)
	}
	for k, v := range y.Vars.PortGroups {
		c.Vars.Ports[k] = string(v)
	}
	// Check every variable now so a typo is reported against the config,
	// not as a refusal of each rule that uses it.
	for k, v := range c.Vars.Addresses {
		if _, err := rule.ParseAddrs(v, &c.Vars); err != nil {
			return nil, fmt.Errorf("ips config %s: address-groups %s: %w", path, k, err)
		}
	}
	for k, v := range c.Vars.Ports {
		if _, err := rule.ParsePorts(v, &c.Vars); err != nil {
			return nil, fmt.Errorf("ips config %s: port-groups %s: %w", path, k, err)
		}
	}
	if d := y.Stream.Reassembly.Depth; d != "" {
		if c.StreamDepth, err = parseSize(d); err != nil {
			return nil, fmt.Errorf("ips config %s: stream.reassembly.depth: %w", path, err)
		}
	}
	if f := y.ClassificationFile; f != "" {
		if !filepath.IsAbs(f) {
			f = filepath.Join(filepath.Dir(path), f)
		}
		if c.Classifications, err = LoadClassifications(f); err != nil {
			return nil, fmt.Errorf("ips config %s: %w", path, err)
		}
	}
	return c, nil
}

// parseSize reads "1mb", "512kb", "1048576" as Suricata does.
func parseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"b", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > (1<<31)/mult {
		return 0, fmt.Errorf("size %q is not a positive number with an optional kb, mb or gb", s)
	}
	return n * mult, nil
}

// limits turns the config into stream limits.
func (c *Config) limits() stream.Limits {
	return stream.Limits{Depth: c.StreamDepth}
}
