package channel

import (
	"encoding/binary"
	"fmt"
)

// wireReader consumes a payload field by field. The first short read sticks,
// so message decoders check err once at the end.
type wireReader struct {
	b   []byte
	off int
	err error
	msg string
}

func newWireReader(msg string, b []byte) *wireReader { return &wireReader{b: b, msg: msg} }

func (r *wireReader) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = protoErr("%s: truncated at %s (offset %d, need %d bytes, have %d)", r.msg, field, r.off, n, len(r.b)-r.off)
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *wireReader) u8(field string) uint8 {
	if p := r.take(1, field); p != nil {
		return p[0]
	}
	return 0
}

func (r *wireReader) u16(field string) uint16 {
	if p := r.take(2, field); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *wireReader) u32(field string) uint32 {
	if p := r.take(4, field); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *wireReader) u64(field string) uint64 {
	if p := r.take(8, field); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// str reads a u16-length-prefixed string of at most limit bytes.
func (r *wireReader) str(field string, limit int) string {
	n := int(r.u16(field + " length"))
	if r.err == nil && n > limit {
		r.err = protoErr("%s: %s is %d bytes, limit %d", r.msg, field, n, limit)
		return ""
	}
	return string(r.take(n, field))
}

// done fails if bytes remain: every message has an exact length.
func (r *wireReader) done() error {
	if r.err == nil && r.off != len(r.b) {
		r.err = protoErr("%s: %d trailing bytes", r.msg, len(r.b)-r.off)
	}
	return r.err
}

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func appendStr(b []byte, s string, limit int) ([]byte, error) {
	if len(s) > limit {
		return b, fmt.Errorf("string of %d bytes exceeds limit %d", len(s), limit)
	}
	b = appendU16(b, uint16(len(s)))
	return append(b, s...), nil
}

func appendVersion(b []byte, v Version) []byte {
	b = appendU16(b, v.Major)
	b = appendU16(b, v.Minor)
	b = appendU16(b, v.ServicePack)
	return appendU32(b, v.Build)
}

func (r *wireReader) version(field string) Version {
	return Version{Major: r.u16(field + ".major"), Minor: r.u16(field + ".minor"),
		ServicePack: r.u16(field + ".sp"), Build: r.u32(field + ".build")}
}
