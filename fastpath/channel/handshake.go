package channel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"time"
)

// Identity is what one side announces in the handshake.
type Identity struct {
	Version      Version
	Revision     uint32
	Capabilities Capabilities
	ID           string // host id (fast path) or appliance id (slow path)
}

func (id Identity) versionInfo() string {
	return fmt.Sprintf("%s:rev=%d", id.Version, id.Revision)
}

// Conn is a connection with its frame reader and writer. The handshake and the
// session after it share them, so the sequence numbers run on.
type Conn struct {
	net.Conn
	R *Reader
	W *Writer
}

// NewConn wraps c for framing.
func NewConn(c net.Conn) *Conn {
	return &Conn{Conn: c, R: NewReader(c), W: NewWriter(c)}
}

func (c *Conn) send(t FrameType, m interface{ Marshal() ([]byte, error) }) error {
	p, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := c.W.WriteFrame(t, p); err != nil {
		return err
	}
	return c.W.Flush()
}

// RejectedError is a binding refusal, by this side (Local) or by the peer.
// Callers branch on Code.
type RejectedError struct {
	Code    RejectCode
	Message string
	Local   bool
}

func (e *RejectedError) Error() string {
	if e.Local {
		return "refused peer: " + e.Message
	}
	return "binding rejected by peer: " + e.Message
}

// RejectCodeOf returns the reject code in err, or 0.
func RejectCodeOf(err error) RejectCode {
	var re *RejectedError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

// Result is a completed handshake.
type Result struct {
	Peer       Identity
	Negotiated Capabilities
	SessionID  uint64
	// PeerKeepalive and PeerDeadAfter are the fast path's keepalive settings
	// as announced in WELCOME (zero on the fast path's own side).
	PeerKeepalive time.Duration
	PeerDeadAfter time.Duration
}

// proofs bind the secret to both nonces and to what each side announced, so
// a replayed or altered HELLO/CHALLENGE fails the check. Labels separate the
// two directions so one side's proof is never valid as the other's.
func hostProof(secret, hello []byte, hostNonce [NonceSize]byte) [ProofSize]byte {
	return mac(secret, "palisade/1 fast path proof", hello, hostNonce[:])
}

func appProof(secret, hello, challenge []byte) [ProofSize]byte {
	return mac(secret, "palisade/1 slow path proof", hello, challenge)
}

func mac(secret []byte, label string, parts ...[]byte) [ProofSize]byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(label))
	h.Write([]byte{0})
	for _, p := range parts {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
		h.Write(n[:])
		h.Write(p)
	}
	var out [ProofSize]byte
	copy(out[:], h.Sum(nil))
	return out
}

func nonce() ([NonceSize]byte, error) {
	var n [NonceSize]byte
	_, err := rand.Read(n[:])
	return n, err
}

// AcceptConfig is the fast path's side of the handshake.
type AcceptConfig struct {
	Self      Identity
	Secret    []byte
	SessionID uint64
	Keepalive time.Duration
	DeadAfter time.Duration
	// Admit is called once the slow path is authenticated; an error refuses
	// the binding with RejectAlreadyBound (one slow path per host).
	Admit func(peer Identity) error
}

// compatibility explains a version or revision mismatch the way both sides
// log it, naming both versions and the revision, in the seeds' form
// ("info=9.5.2.x:rev=5050, expecting=9.5.3.x:rev=5050").
func compatibility(self, peer Identity, selfRole, peerRole string) (RejectCode, string) {
	what, code := "", RejectCode(0)
	switch {
	case !self.Version.Compatible(peer.Version):
		what, code = "version mismatch", RejectVersionMismatch
	case self.Revision != peer.Revision:
		what, code = "revision mismatch", RejectRevision
	default:
		return 0, ""
	}
	return code, fmt.Sprintf("%s: %s info=%s, %s expecting=%s:rev=%d (%s)",
		what, peerRole, peer.versionInfo(), selfRole, self.Version.Release(), self.Revision, self.versionInfo())
}

// Accept runs the fast path's side of the handshake. On a refusal it has
// already sent REJECT and returns a *RejectedError with Local set.
func (c *Conn) Accept(cfg AcceptConfig) (Result, error) {
	f, err := c.R.ReadFrame()
	if err != nil {
		return Result{}, fmt.Errorf("read HELLO: %w", err)
	}
	if f.Type != TypeHello {
		return Result{}, c.refuse(RejectProtocol, fmt.Sprintf("out-of-order frame: %s before HELLO", f.Type))
	}
	helloBytes := append([]byte(nil), f.Payload...)
	hello, err := UnmarshalHello(helloBytes)
	if err != nil {
		return Result{}, c.refuse(RejectProtocol, err.Error())
	}
	peer := Identity{Version: hello.Version, Revision: hello.Revision, Capabilities: hello.Capabilities, ID: hello.ApplianceID}
	if code, msg := compatibility(cfg.Self, peer, "fast path", "slow path"); code != 0 {
		return Result{Peer: peer}, c.refuse(code, msg)
	}

	ch := Challenge{Version: cfg.Self.Version, Revision: cfg.Self.Revision, Capabilities: cfg.Self.Capabilities, HostID: cfg.Self.ID}
	if ch.Nonce, err = nonce(); err != nil {
		return Result{}, fmt.Errorf("challenge nonce: %w", err)
	}
	ch.Proof = hostProof(cfg.Secret, helloBytes, ch.Nonce)
	chBytes, err := ch.Marshal()
	if err != nil {
		return Result{}, err
	}
	if err := c.W.WriteFrame(TypeChallenge, chBytes); err != nil {
		return Result{}, err
	}
	if err := c.W.Flush(); err != nil {
		return Result{}, fmt.Errorf("send CHALLENGE: %w", err)
	}

	f, err = c.R.ReadFrame()
	if err != nil {
		return Result{Peer: peer}, fmt.Errorf("read AUTH: %w", err)
	}
	switch f.Type {
	case TypeAuth:
	case TypeReject:
		// The slow path refused us: it could not verify our proof.
		rej, err := UnmarshalReject(f.Payload)
		if err != nil {
			return Result{Peer: peer}, err
		}
		return Result{Peer: peer}, &RejectedError{Code: rej.Code, Message: rej.Message}
	default:
		return Result{Peer: peer}, c.refuse(RejectProtocol, fmt.Sprintf("out-of-order frame: %s instead of AUTH", f.Type))
	}
	auth, err := UnmarshalAuth(f.Payload)
	if err != nil {
		return Result{Peer: peer}, c.refuse(RejectProtocol, err.Error())
	}
	want := appProof(cfg.Secret, helloBytes, chBytes)
	if !hmac.Equal(want[:], auth.Proof[:]) {
		return Result{Peer: peer}, c.refuse(RejectSecretMismatch,
			"secret mismatch, incompatible slow path: challenge-response failed")
	}
	if cfg.Admit != nil {
		if err := cfg.Admit(peer); err != nil {
			return Result{Peer: peer}, c.refuse(RejectAlreadyBound, err.Error())
		}
	}
	neg := cfg.Self.Capabilities & peer.Capabilities
	w := Welcome{SessionID: cfg.SessionID, Capabilities: neg,
		KeepaliveMillis: uint32(cfg.Keepalive / time.Millisecond), DeadAfterMillis: uint32(cfg.DeadAfter / time.Millisecond)}
	if err := c.send(TypeWelcome, w); err != nil {
		return Result{Peer: peer}, fmt.Errorf("send WELCOME: %w", err)
	}
	return Result{Peer: peer, Negotiated: neg, SessionID: cfg.SessionID}, nil
}

func (c *Conn) refuse(code RejectCode, msg string) error {
	// Best effort: the peer may already be gone, and the refusal stands anyway.
	_ = c.send(TypeReject, Reject{Code: code, Message: msg})
	return &RejectedError{Code: code, Message: msg, Local: true}
}

// OfferConfig is the slow path's side of the handshake.
type OfferConfig struct {
	Self   Identity
	Secret []byte
}

// Offer runs the slow path's side of the handshake.
func (c *Conn) Offer(cfg OfferConfig) (Result, error) {
	hello := Hello{Version: cfg.Self.Version, Revision: cfg.Self.Revision, Capabilities: cfg.Self.Capabilities, ApplianceID: cfg.Self.ID}
	var err error
	if hello.Nonce, err = nonce(); err != nil {
		return Result{}, fmt.Errorf("hello nonce: %w", err)
	}
	helloBytes, err := hello.Marshal()
	if err != nil {
		return Result{}, err
	}
	if err := c.W.WriteFrame(TypeHello, helloBytes); err != nil {
		return Result{}, err
	}
	if err := c.W.Flush(); err != nil {
		return Result{}, fmt.Errorf("send HELLO: %w", err)
	}

	f, err := c.R.ReadFrame()
	if err != nil {
		return Result{}, fmt.Errorf("read CHALLENGE: %w", err)
	}
	switch f.Type {
	case TypeChallenge:
	case TypeReject:
		return Result{}, peerRejection(f.Payload)
	default:
		return Result{}, c.refuse(RejectProtocol, fmt.Sprintf("out-of-order frame: %s instead of CHALLENGE", f.Type))
	}
	chBytes := append([]byte(nil), f.Payload...)
	ch, err := UnmarshalChallenge(chBytes)
	if err != nil {
		return Result{}, c.refuse(RejectProtocol, err.Error())
	}
	peer := Identity{Version: ch.Version, Revision: ch.Revision, Capabilities: ch.Capabilities, ID: ch.HostID}
	if code, msg := compatibility(cfg.Self, peer, "slow path", "fast path"); code != 0 {
		return Result{Peer: peer}, c.refuse(code, msg)
	}
	// AUTH goes out even if the host's proof is wrong: with mismatched
	// secrets the fast path then refuses us, and the host's log — where the
	// operator looks first — says "secret mismatch". The host's proof is
	// enforced below before anything is accepted from it.
	want := hostProof(cfg.Secret, helloBytes, ch.Nonce)
	hostProved := hmac.Equal(want[:], ch.Proof[:])
	if err := c.send(TypeAuth, Auth{Proof: appProof(cfg.Secret, helloBytes, chBytes)}); err != nil {
		return Result{Peer: peer}, fmt.Errorf("send AUTH: %w", err)
	}

	f, err = c.R.ReadFrame()
	if err != nil {
		return Result{Peer: peer}, fmt.Errorf("read WELCOME: %w", err)
	}
	switch f.Type {
	case TypeWelcome:
	case TypeReject:
		return Result{Peer: peer}, peerRejection(f.Payload)
	default:
		return Result{Peer: peer}, c.refuse(RejectProtocol, fmt.Sprintf("out-of-order frame: %s instead of WELCOME", f.Type))
	}
	if !hostProved {
		return Result{Peer: peer}, c.refuse(RejectSecretMismatch,
			"secret mismatch: the fast path failed challenge-response")
	}
	w, err := UnmarshalWelcome(f.Payload)
	if err != nil {
		return Result{Peer: peer}, c.refuse(RejectProtocol, err.Error())
	}
	return Result{Peer: peer, Negotiated: w.Capabilities, SessionID: w.SessionID,
		PeerKeepalive: time.Duration(w.KeepaliveMillis) * time.Millisecond,
		PeerDeadAfter: time.Duration(w.DeadAfterMillis) * time.Millisecond}, nil
}

func peerRejection(p []byte) error {
	rej, err := UnmarshalReject(p)
	if err != nil {
		return err
	}
	return &RejectedError{Code: rej.Code, Message: rej.Message}
}
