package wrs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/palisade/palisade/slowpath/inspect/http1"
)

// Entry is one feed line's verdict on a site.
type Entry struct {
	Category string
	Score    int // 0 (harmless) to 100 (certainly malicious)
	Source   string
}

// Feed is the merged reputation data of one or more feed files.
type Feed struct {
	exact    map[string]Entry      // "example.com"
	wildcard map[string]Entry      // "example.com" for "*.example.com"
	urls     map[string][]urlEntry // host → path prefixes, longest first
	where    map[string]string     // key → file:line, for duplicate reports
}

type urlEntry struct {
	prefix string // path (with query) prefix, starting with '/'
	Entry
}

// NewFeed returns an empty feed.
func NewFeed() *Feed {
	return &Feed{exact: map[string]Entry{}, wildcard: map[string]Entry{}, urls: map[string][]urlEntry{}, where: map[string]string{}}
}

// Len is the number of entries.
func (f *Feed) Len() int {
	n := len(f.exact) + len(f.wildcard)
	for _, u := range f.urls {
		n += len(u)
	}
	return n
}

// LoadFeeds reads feed files into one feed. Any malformed line fails the
// whole load with its file and line: nothing is loaded from a bad file.
func LoadFeeds(paths ...string) (*Feed, error) {
	f := NewFeed()
	for _, p := range paths {
		fh, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("wrs feed: %w", err)
		}
		err = f.Read(fh, p)
		fh.Close()
		if err != nil {
			return nil, err
		}
	}
	return f, nil
}

// Read adds a feed file's entries. The format, one entry per line:
//
//	# comment
//	<domain-or-url> <category> <score>   # trailing comment
//
// A domain is "example.com" (that host only) or "*.example.com" (its
// subdomains, not example.com itself). A URL is a host followed by a path,
// optionally after "http://" or "https://": "example.com/login" matches every
// request whose path starts with /login on that host. category is
// [a-z0-9_-]+, score an integer from 0 to 100. On error f is unchanged.
func (f *Feed) Read(r io.Reader, name string) error {
	staged := NewFeed()
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		loc := fmt.Sprintf("%s:%d", name, n)
		if len(fields) != 3 {
			return fmt.Errorf("%s: want \"<domain-or-url> <category> <score>\", got %d fields", loc, len(fields))
		}
		e, err := parseEntry(fields[1], fields[2])
		if err != nil {
			return fmt.Errorf("%s: %w", loc, err)
		}
		e.Source = loc
		if err := staged.add(fields[0], e, f); err != nil {
			return fmt.Errorf("%s: %w", loc, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	f.merge(staged)
	return nil
}

func parseEntry(category, score string) (Entry, error) {
	for _, c := range category {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return Entry{}, fmt.Errorf("category %q: want lower-case letters, digits, '_' or '-'", category)
		}
	}
	s, err := strconv.Atoi(score)
	if err != nil || s < 0 || s > 100 {
		return Entry{}, fmt.Errorf("score %q is not an integer from 0 to 100", score)
	}
	return Entry{Category: category, Score: s}, nil
}

// add parses a site and stores e; prior is checked for duplicates too.
func (f *Feed) add(site string, e Entry, prior *Feed) error {
	for _, scheme := range []string{"http://", "https://"} {
		if len(site) > len(scheme) && strings.EqualFold(site[:len(scheme)], scheme) {
			site = site[len(scheme):]
			break
		}
	}
	// Host names are case-insensitive; the path is compared as sent.
	host, path, isURL := strings.Cut(site, "/")
	host = strings.ToLower(host)
	if site = host; isURL {
		site += "/" + path
	}
	wild := strings.HasPrefix(host, "*.")
	if wild {
		if isURL {
			return fmt.Errorf("%q: a wildcard cannot have a path", site)
		}
		host = host[2:]
	}
	host = strings.TrimSuffix(host, ".")
	if err := checkHost(host); err != nil {
		return fmt.Errorf("%q: %w", site, err)
	}
	key := host
	switch {
	case isURL:
		key = host + "/" + path
	case wild:
		key = "*." + host
	}
	for _, feed := range []*Feed{prior, f} {
		if at, dup := feed.where[key]; dup {
			return fmt.Errorf("%q is already listed at %s", site, at)
		}
	}
	f.where[key] = e.Source
	switch {
	case isURL:
		f.urls[host] = append(f.urls[host], urlEntry{"/" + path, e})
	case wild:
		f.wildcard[host] = e
	default:
		f.exact[host] = e
	}
	return nil
}

func checkHost(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("empty or over-long host")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host has an empty or over-long label")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host has character %q", c)
			}
		}
	}
	return nil
}

func (f *Feed) merge(o *Feed) {
	for k, v := range o.exact {
		f.exact[k] = v
	}
	for k, v := range o.wildcard {
		f.wildcard[k] = v
	}
	for h, us := range o.urls {
		all := append(f.urls[h], us...)
		// Longest prefix first, so the first hit is the most specific.
		for i := 1; i < len(all); i++ {
			for j := i; j > 0 && len(all[j].prefix) > len(all[j-1].prefix); j-- {
				all[j], all[j-1] = all[j-1], all[j]
			}
		}
		f.urls[h] = all
	}
	for k, v := range o.where {
		f.where[k] = v
	}
}

// Match is a lookup's result.
type Match struct {
	Entry
	Key string // what matched: "example.com", "*.example.com" or "example.com/path"
}

// Lookup finds the most specific entry for a host and, for HTTP, a path
// (empty for TLS): the longest URL prefix on that host, else the exact
// host, else the longest wildcard suffix.
func (f *Feed) Lookup(host, path string) (Match, bool) {
	host = http1.NormalizeHost(host)
	if host == "" {
		return Match{}, false
	}
	if path != "" {
		for _, u := range f.urls[host] {
			if strings.HasPrefix(path, u.prefix) {
				return Match{u.Entry, host + u.prefix}, true
			}
		}
	}
	if e, ok := f.exact[host]; ok {
		return Match{e, host}, true
	}
	for h := host; ; {
		i := strings.IndexByte(h, '.')
		if i < 0 {
			return Match{}, false
		}
		h = h[i+1:]
		if e, ok := f.wildcard[h]; ok {
			return Match{e, "*." + h}, true
		}
	}
}
