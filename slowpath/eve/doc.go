// Package eve owns the slow path's alert records: their Suricata-compatible
// EVE JSON shape, the Sink interface engines emit them through, and a writer
// that appends one JSON object per line to a file. The live daemon forwards
// records through its own Sink; the offline mode writes them with Writer.
package eve
