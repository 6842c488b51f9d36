package vcsim

import (
	"context"
	"net/url"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
)

func TestStartServesAClusterOfHostsOverTLS(t *testing.T) {
	s, err := Start(Options{HostsPerCluster: 2, VMsPerHost: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	u := *s.URL
	u.User = url.UserPassword(s.User, s.Password)
	c, err := govmomi.NewClient(ctx, &u, true)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := find.NewFinder(c.Client).HostSystemList(ctx, "/DC0/host/DC0_C0/*")
	if err != nil || len(hosts) != 2 {
		t.Fatalf("cluster hosts: %v, %v", hosts, err)
	}
	u.User = url.UserPassword(s.User, "wrong")
	if _, err := govmomi.NewClient(ctx, &u, true); err == nil {
		t.Fatal("a wrong password logged in")
	}
}
