//go:build race

package ips

const raceEnabled = true
