package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// maxSocketPath is sun_path's size minus the terminating NUL.
const maxSocketPath = 107

// Serve listens on the unix socket at path (mode 0600, parent 0700) and serves
// h until ctx ends; then it shuts down and removes the socket. A stale socket
// left by a crashed daemon is replaced; a live one is an error.
func Serve(ctx context.Context, path string, h http.Handler) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("control socket %s: path is %d bytes, unix sockets allow %d", path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		_ = c.Close()
		return fmt.Errorf("control socket %s: another daemon is serving it", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		_ = os.Remove(path)
		return fmt.Errorf("control socket %s: %w", path, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	_ = os.Remove(path)
	if err != nil {
		return fmt.Errorf("control socket %s: shutdown: %w", path, err)
	}
	return nil
}

// Error is the JSON body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes an Error with status.
func WriteError(w http.ResponseWriter, status int, code string, err error) {
	WriteJSON(w, status, Error{Error: err.Error(), Code: code})
}

// StatusError is a non-2xx answer from the daemon.
type StatusError struct {
	Status int
	Body   Error
}

func (e *StatusError) Error() string {
	if e.Body.Code != "" {
		return fmt.Sprintf("%s (%s, HTTP %d)", e.Body.Error, e.Body.Code, e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Body.Error, e.Status)
}

// Client talks to a daemon's control socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{path: path, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Do sends method urlPath with in as the JSON body (if non-nil) and decodes
// the answer into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, urlPath string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, urlPath, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://local"+urlPath, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return fmt.Errorf("cannot reach the daemon on %s (is it running?): %w", c.path, err)
		}
		return fmt.Errorf("%s %s: %w", method, urlPath, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, urlPath, err)
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Status: resp.StatusCode}
		if json.Unmarshal(data, &se.Body) != nil || se.Body.Error == "" {
			se.Body.Error = string(bytes.TrimSpace(data))
		}
		return se
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, urlPath, err)
		}
	}
	return nil
}
