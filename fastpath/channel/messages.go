package channel

import (
	"fmt"
)

// NonceSize and ProofSize are fixed: 32 random bytes, HMAC-SHA256 output.
const (
	NonceSize = 32
	ProofSize = 32

	maxIDLen      = 255
	maxMessageLen = 1024
)

// Hello opens the handshake (slow path → fast path). Its layout is frozen
// across protocol revisions.
type Hello struct {
	Version      Version
	Revision     uint32
	Nonce        [NonceSize]byte
	Capabilities Capabilities
	ApplianceID  string
}

func (m Hello) Marshal() ([]byte, error) {
	b := appendVersion(make([]byte, 0, 64), m.Version)
	b = appendU32(b, m.Revision)
	b = append(b, m.Nonce[:]...)
	b = appendU64(b, uint64(m.Capabilities))
	b, err := appendStr(b, m.ApplianceID, maxIDLen)
	if err != nil {
		return nil, fmt.Errorf("HELLO appliance id: %w", err)
	}
	return b, nil
}

func UnmarshalHello(p []byte) (Hello, error) {
	r := newWireReader("HELLO", p)
	var m Hello
	m.Version = r.version("version")
	m.Revision = r.u32("revision")
	copy(m.Nonce[:], r.take(NonceSize, "nonce"))
	m.Capabilities = Capabilities(r.u64("capabilities"))
	m.ApplianceID = r.str("appliance id", maxIDLen)
	return m, r.done()
}

// Challenge answers a compatible HELLO (fast path → slow path). Proof shows
// the host holds the secret, so the slow path authenticates the host too.
// Its layout is frozen across protocol revisions.
type Challenge struct {
	Version      Version
	Revision     uint32
	Nonce        [NonceSize]byte
	Capabilities Capabilities
	HostID       string
	Proof        [ProofSize]byte
}

func (m Challenge) Marshal() ([]byte, error) {
	b := appendVersion(make([]byte, 0, 128), m.Version)
	b = appendU32(b, m.Revision)
	b = append(b, m.Nonce[:]...)
	b = appendU64(b, uint64(m.Capabilities))
	b, err := appendStr(b, m.HostID, maxIDLen)
	if err != nil {
		return nil, fmt.Errorf("CHALLENGE host id: %w", err)
	}
	return append(b, m.Proof[:]...), nil
}

func UnmarshalChallenge(p []byte) (Challenge, error) {
	r := newWireReader("CHALLENGE", p)
	var m Challenge
	m.Version = r.version("version")
	m.Revision = r.u32("revision")
	copy(m.Nonce[:], r.take(NonceSize, "nonce"))
	m.Capabilities = Capabilities(r.u64("capabilities"))
	m.HostID = r.str("host id", maxIDLen)
	copy(m.Proof[:], r.take(ProofSize, "proof"))
	return m, r.done()
}

// Auth carries the slow path's proof (slow path → fast path).
type Auth struct {
	Proof [ProofSize]byte
}

func (m Auth) Marshal() ([]byte, error) { return append([]byte(nil), m.Proof[:]...), nil }

func UnmarshalAuth(p []byte) (Auth, error) {
	r := newWireReader("AUTH", p)
	var m Auth
	copy(m.Proof[:], r.take(ProofSize, "proof"))
	return m, r.done()
}

// Welcome completes the binding (fast path → slow path).
type Welcome struct {
	SessionID    uint64
	Capabilities Capabilities // negotiated: the intersection of both sides
	// KeepaliveMillis is how often the fast path pings; DeadAfterMillis is
	// how long it waits for any frame before it declares the slow path dead.
	KeepaliveMillis uint32
	DeadAfterMillis uint32
}

func (m Welcome) Marshal() ([]byte, error) {
	b := appendU64(make([]byte, 0, 24), m.SessionID)
	b = appendU64(b, uint64(m.Capabilities))
	b = appendU32(b, m.KeepaliveMillis)
	return appendU32(b, m.DeadAfterMillis), nil
}

func UnmarshalWelcome(p []byte) (Welcome, error) {
	r := newWireReader("WELCOME", p)
	var m Welcome
	m.SessionID = r.u64("session id")
	m.Capabilities = Capabilities(r.u64("capabilities"))
	m.KeepaliveMillis = r.u32("keepalive")
	m.DeadAfterMillis = r.u32("dead after")
	return m, r.done()
}

// RejectCode says why a binding was refused; the slow path branches on it.
type RejectCode uint16

const (
	RejectProtocol        RejectCode = 1 // malformed or out-of-order handshake
	RejectVersionMismatch RejectCode = 2 // first three version components differ
	RejectRevision        RejectCode = 3 // protocol revisions differ
	RejectSecretMismatch  RejectCode = 4 // challenge-response failed
	RejectAlreadyBound    RejectCode = 5 // another slow path holds the binding
	RejectShuttingDown    RejectCode = 6 // the fast path is stopping
)

func (c RejectCode) String() string {
	switch c {
	case RejectProtocol:
		return "protocol error"
	case RejectVersionMismatch:
		return "version mismatch"
	case RejectRevision:
		return "revision mismatch"
	case RejectSecretMismatch:
		return "secret mismatch"
	case RejectAlreadyBound:
		return "already bound"
	case RejectShuttingDown:
		return "shutting down"
	}
	return fmt.Sprintf("reject(%d)", uint16(c))
}

// Reject refuses a binding, and Goodbye ends one, with a code and an
// operator-readable message. Reject's layout is frozen across revisions.
type Reject struct {
	Code    RejectCode
	Message string
}

func (m Reject) Marshal() ([]byte, error) {
	b, err := appendStr(appendU16(make([]byte, 0, 8+len(m.Message)), uint16(m.Code)), m.Message, maxMessageLen)
	if err != nil {
		return nil, fmt.Errorf("REJECT message: %w", err)
	}
	return b, nil
}

func UnmarshalReject(p []byte) (Reject, error) {
	r := newWireReader("REJECT", p)
	var m Reject
	m.Code = RejectCode(r.u16("code"))
	m.Message = r.str("message", maxMessageLen)
	return m, r.done()
}

// Ping and Pong carry an opaque token the answer echoes, for round-trip time.
type Ping struct{ Token uint64 }

func (m Ping) Marshal() ([]byte, error) { return appendU64(nil, m.Token), nil }

func UnmarshalPing(p []byte) (Ping, error) {
	r := newWireReader("PING", p)
	m := Ping{Token: r.u64("token")}
	return m, r.done()
}
