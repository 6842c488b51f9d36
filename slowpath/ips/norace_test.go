//go:build !race

package ips

const raceEnabled = false
