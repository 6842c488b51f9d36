package appproto

import (
	"github.com/palisade/palisade/slowpath/inspect/http1"
	"github.com/palisade/palisade/slowpath/inspect/tlshello"
)

// Proto is a flow's application protocol.
type Proto uint8

const (
	Unknown Proto = iota // not enough bytes yet
	HTTP
	TLS
	Other
)

// decisive is how many client bytes always suffice to decide: the longest
// method token LooksLikeRequest accepts and its space.
const decisive = 17

// Detect looks at the start of a client stream. It returns Unknown until it
// can tell.
func Detect(client []byte) Proto {
	switch {
	case http1.LooksLikeRequest(client):
		return HTTP
	case tlshello.LooksLikeTLS(client):
		return TLS
	case len(client) >= decisive:
		return Other
	}
	return Unknown
}
