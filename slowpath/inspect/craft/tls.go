package craft

import "encoding/binary"

// ClientHello returns a TLS 1.2-framed handshake record carrying a TLS 1.3
// ClientHello for sni, with fixed random and key material so captures are
// reproducible.
func ClientHello(sni string) []byte {
	var body []byte
	body = append(body, 3, 3)                               // legacy_version TLS 1.2
	body = append(body, make32(0x11)...)                    // random
	body = append(body, 32)                                 // session id
	body = append(body, make32(0x22)...)                    //
	body = append(body, 0, 6, 0x13, 1, 0x13, 2, 0xc0, 0x2f) // cipher suites
	body = append(body, 1, 0)                               // compression: null
	var ext []byte
	if sni != "" {
		name := []byte(sni)
		sn := u16(nil, len(name)+3)
		sn = append(sn, 0) // host_name
		sn = u16(sn, len(name))
		sn = append(sn, name...)
		ext = extension(ext, 0, sn)
	}
	ext = extension(ext, 43, []byte{2, 3, 4})          // supported_versions: TLS 1.3
	ext = extension(ext, 10, []byte{0, 2, 0, 0x1d})    // supported_groups: x25519
	ext = extension(ext, 13, []byte{0, 2, 0x08, 0x04}) // signature_algorithms
	ks := append([]byte{0, 36, 0, 0x1d, 0, 32}, make32(0x33)...)
	ext = extension(ext, 51, ks) // key_share
	body = u16(body, len(ext))
	body = append(body, ext...)
	return record(22, handshake(1, body))
}

// ServerHello returns a handshake record with a minimal ServerHello.
func ServerHello() []byte {
	var body []byte
	body = append(body, 3, 3)
	body = append(body, make32(0x44)...)
	body = append(body, 0, 0x13, 1, 0)
	ext := extension(nil, 43, []byte{3, 4})
	body = u16(body, len(ext))
	body = append(body, ext...)
	return record(22, handshake(2, body))
}

// AppData returns an application_data record of n opaque bytes.
func AppData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return record(23, b)
}

func make32(v byte) []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = v + byte(i)
	}
	return b
}

func u16(b []byte, v int) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }

func extension(b []byte, typ int, data []byte) []byte {
	b = u16(b, typ)
	b = u16(b, len(data))
	return append(b, data...)
}

func handshake(typ byte, body []byte) []byte {
	h := []byte{typ, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(h, body...)
}

func record(typ byte, frag []byte) []byte {
	r := []byte{typ, 3, 1}
	r = u16(r, len(frag))
	return append(r, frag...)
}
