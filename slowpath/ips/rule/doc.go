// Package rule parses Suricata rules: the header, the option list with
// Suricata's quoting and escapes, address and port expressions with
// variables, and PCRE patterns translated to Go's RE2 where the two agree.
// It accepts only what the IPS engine implements faithfully and refuses the
// rest with a reason, so that no rule is ever loaded with a part ignored.
package rule
