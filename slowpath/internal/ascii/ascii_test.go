package ascii

import "testing"

func TestFoldAndHex(t *testing.T) {
	if got := string(AppendLower([]byte("x"), []byte("AbZ\xc3\x89@["))); got != "xabz\xc3\x89@[" {
		t.Fatalf("AppendLower %q", got)
	}
	if Upper('a') != 'A' || Upper('{') != '{' || Lower('Z') != 'z' || Lower('\xc0') != '\xc0' {
		t.Fatal("fold")
	}
	for i, c := range []byte("0123456789abcdef") {
		if !IsHex(c) || Unhex(c) != byte(i) || i >= 10 && Unhex(Upper(c)) != byte(i) {
			t.Fatalf("hex %q", c)
		}
	}
	if IsHex('g') || IsHex('G') || IsHex('/') {
		t.Fatal("not hex")
	}
}
