package vcsim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"

	// The simulator's ESX inventory and its SDK endpoints.
	_ "github.com/vmware/govmomi/simulator/esx"
)

// Options shape the simulated vCenter.
type Options struct {
	Clusters        int // clusters in the one datacenter (default 1)
	HostsPerCluster int // default 2
	// VMsPerHost VMs are created per cluster host; the simulator places a
	// cluster's VMs on random hosts, so Start moves them so that each host
	// has exactly this many.
	VMsPerHost int
	// User and Password are required to log in (a bad login is refused);
	// default "palisade" / a fixed test password.
	User, Password string
}

// Sim is a running simulated vCenter on loopback, over TLS.
type Sim struct {
	Model  *simulator.Model
	Server *simulator.Server
	// URL is the SDK endpoint without credentials.
	URL *url.URL
	// Thumbprint is the server certificate's SHA-1 thumbprint as vCenter
	// shows it (AB:CD:...), for pinning.
	Thumbprint string
	User       string
	Password   string
}

const defaultPassword = "sim-Passw0rd"

// Start creates the model and serves it on 127.0.0.1 with TLS.
func Start(o Options) (*Sim, error) {
	if o.Clusters == 0 {
		o.Clusters = 1
	}
	if o.HostsPerCluster == 0 {
		o.HostsPerCluster = 2
	}
	if o.User == "" {
		o.User = "palisade"
	}
	if o.Password == "" {
		o.Password = defaultPassword
	}
	m := simulator.VPX()
	m.Datacenter = 1
	m.Cluster = o.Clusters
	m.ClusterHost = o.HostsPerCluster
	m.Host = 0
	m.Machine = o.VMsPerHost * o.HostsPerCluster
	m.Autostart = true
	if err := m.Create(); err != nil {
		m.Remove()
		return nil, fmt.Errorf("vcsim: create model: %w", err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(o.User, o.Password)}
	s := &Sim{Model: m, User: o.User, Password: o.Password}
	s.serve()
	return s, nil
}

func (s *Sim) serve() {
	s.Server = s.Model.Service.NewServer()
	u := *s.Server.URL
	u.User = nil
	s.URL = &u
	s.Thumbprint = soap.ThumbprintSHA1(s.Server.Certificate())
}

// Close stops the server and removes the model's temporary files.
func (s *Sim) Close() error {
	if s == nil || s.Model == nil {
		return errors.New("vcsim: not started")
	}
	s.Server.Close()
	s.Model.Remove()
	return nil
}
