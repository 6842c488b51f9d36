package ascii

// Lower folds A-Z to a-z.
func Lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Upper folds a-z to A-Z.
func Upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// AppendLower appends src to dst with A-Z folded.
func AppendLower(dst, src []byte) []byte {
	for _, c := range src {
		dst = append(dst, Lower(c))
	}
	return dst
}

// IsHex says whether c is a hex digit.
func IsHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// Unhex is the value of hex digit c.
func Unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
