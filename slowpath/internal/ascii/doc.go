// Package ascii has the byte helpers the slow path's parsers share: ASCII
// case folding that leaves every other byte alone (bytes.ToLower would read
// its input as UTF-8) and hex digits.
package ascii
