package ips

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

//go:embed classification.config
var defaultClassification string

// DefaultPriority is a rule's severity with neither classtype nor priority,
// as in Suricata.
const DefaultPriority = 3

// Class is one classification: the EVE category and default severity of
// the rules that name it.
type Class struct {
	Name        string
	Description string
	Priority    int
}

// Classifications maps classtype names to classes.
type Classifications map[string]Class

// DefaultClassifications is Suricata's standard table, shipped with the
// engine.
func DefaultClassifications() Classifications {
	c, err := ParseClassifications(strings.NewReader(defaultClassification), "classification.config")
	if err != nil {
		panic(err) // the embedded file is tested
	}
	return c
}

// LoadClassifications reads a classification.config file.
func LoadClassifications(path string) (Classifications, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseClassifications(f, path)
}

// ParseClassifications reads lines "config classification: name,description,priority".
func ParseClassifications(r io.Reader, name string) (Classifications, error) {
	c := Classifications{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, "config classification:")
		parts := strings.Split(rest, ",")
		if !ok || len(parts) != 3 {
			return nil, fmt.Errorf("%s:%d: want \"config classification: name,description,priority\"", name, n)
		}
		prio, err := strconv.Atoi(strings.TrimSpace(parts[2]))
		if err != nil || prio < 1 || prio > 255 {
			return nil, fmt.Errorf("%s:%d: priority %q is not a number from 1 to 255", name, n, strings.TrimSpace(parts[2]))
		}
		cl := Class{Name: strings.TrimSpace(parts[0]), Description: strings.TrimSpace(parts[1]), Priority: prio}
		if cl.Name == "" {
			return nil, fmt.Errorf("%s:%d: empty classification name", name, n)
		}
		c[cl.Name] = cl
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}
