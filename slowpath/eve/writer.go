package eve

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
)

// Writer appends records as JSON lines. The first write error is kept and
// returned by Flush and Close; later records are dropped rather than
// half-written.
type Writer struct {
	mu     sync.Mutex
	w      *bufio.Writer
	closer io.Closer
	enc    *json.Encoder
	count  int
	err    error
}

// NewWriter writes records to w.
func NewWriter(w io.Writer) *Writer {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &Writer{w: bw, enc: enc}
}

// OpenFile appends records to the file at path, creating it if needed.
func OpenFile(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("eve output: %w", err)
	}
	w := NewWriter(f)
	w.closer = f
	return w, nil
}

// Emit implements Sink.
func (w *Writer) Emit(r *Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	// Encoder.Encode writes the object and a newline in one call.
	if err := w.enc.Encode(r); err != nil {
		w.err = fmt.Errorf("eve output: %w", err)
		return
	}
	w.count++
}

// Count is the number of records written.
func (w *Writer) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// Flush pushes buffered lines to the file.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.w.Flush(); err != nil {
		w.err = fmt.Errorf("eve output: %w", err)
	}
	return w.err
}

// Close flushes and closes the file, if Writer opened one.
func (w *Writer) Close() error {
	err := w.Flush()
	if w.closer != nil {
		if cerr := w.closer.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("eve output: %w", cerr)
		}
	}
	return err
}
