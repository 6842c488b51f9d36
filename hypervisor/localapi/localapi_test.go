package localapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade/palisade/hypervisor/lab/wait"
)

func serve(t *testing.T, path string) (stop func() error) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"pong": "yes"})
	})
	mux.HandleFunc("POST /v1/fail", func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, http.StatusConflict, "already_bound", errors.New("nope"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, path, mux) }()
	wait.ForErr(t, "socket served", func() error {
		select {
		case err := <-errc:
			t.Fatalf("Serve returned before serving: %v", err)
		default:
		}
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return err
	})
	return func() error { cancel(); return <-errc }
}

func TestServeAndCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	stop := serve(t, path)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	c := NewClient(path)
	var out map[string]string
	if err := c.Do(context.Background(), "GET", "/v1/ping", nil, &out); err != nil || out["pong"] != "yes" {
		t.Fatalf("ping: %v %v", out, err)
	}
	err = c.Do(context.Background(), "POST", "/v1/fail", map[string]int{"x": 1}, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusConflict || se.Body.Code != "already_bound" {
		t.Fatalf("error answer: %v", err)
	}
	// A second daemon on the same socket is refused while the first serves.
	if err := Serve(context.Background(), path, http.NewServeMux()); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Fatalf("second server: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after shutdown: %v", err)
	}
	if err := c.Do(context.Background(), "GET", "/v1/ping", nil, nil); err == nil || !strings.Contains(err.Error(), "is it running?") {
		t.Fatalf("call to a stopped daemon: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a crash: the file stays, nobody listens.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := serve(t, path)(); err != nil {
		t.Fatal(err)
	}
}

func TestOverlongSocketPath(t *testing.T) {
	path := "/tmp/" + strings.Repeat("x", 120) + ".sock"
	if err := Serve(context.Background(), path, http.NewServeMux()); err == nil || !strings.Contains(err.Error(), "unix sockets allow 107") {
		t.Fatalf("overlong path: %v", err)
	}
}
