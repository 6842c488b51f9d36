package api

import "testing"

func TestParseAndFormatSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"256MiB": 256 << 20, "512MB": 512e6, "1GiB": 1 << 30, "300k": 300 << 10, "4096": 4096,
		"1.5GiB": 3 << 29, " 64 MiB ": 64 << 20, "10B": 10, "2g": 2 << 30,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-5MiB", "5XB", "inf", "NaN", "+Inf GiB", "1e30", "16777216TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if s := FormatSize(256 << 20); s != "256.00 MiB" {
		t.Errorf("FormatSize: %s", s)
	}
}
