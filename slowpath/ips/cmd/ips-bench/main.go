package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/internal/ascii"
	"github.com/palisade/palisade/slowpath/ips"
)

func main() {
	mb := flag.Int("mb", 24, "corpus size in MB of TCP payload")
	budget := flag.Duration("budget", 4*time.Second, "time each baseline may scan before its figure is taken from the bytes it covered")
	seed := flag.Int64("seed", 1, "corpus and rule generator seed")
	flag.Parse()
	runtime.GOMAXPROCS(1)

	fmt.Fprintf(os.Stderr, "generating a %d MB corpus...\n", *mb)
	c := genCorpus(*seed, *mb<<20)
	fmt.Printf("ips-bench: one core (GOMAXPROCS=1), %s/%s, %s\n", runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("corpus: %.1f MB of TCP payload (HTTP/1.1 requests and responses) in %d packets over %d connections, seed %d\n",
		float64(c.payload)/1e6, len(c.frames), c.flows, *seed)
	fmt.Printf("rules: generated content rules, 80%% on the stream payload, 20%% on http.uri/http.host/http.user_agent, 30%% nocase;\n" +
		"       about 1%% of patterns are taken from the corpus so that some rules match, the rest are random.\n")
	fmt.Printf("baselines scan every packet payload for every pattern; a baseline that would take longer than %s\n"+
		"stops there and its MB/s is computed from the bytes it covered (column 'scanned').\n\n", *budget)

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rules\tcompile\tPalisade MB/s\talerts\t(a) bytes.Index MB/s\tscanned\t(b) regexp MB/s\tscanned\tPalisade/(a)\tPalisade/(b)\t")
	var first float64
	var last float64
	for _, n := range []int{100, 1000, 10000} {
		rules := genRules(*seed+int64(n), n, c)
		t0 := time.Now()
		rs := ips.LoadString(nil, rules.text)
		compile := time.Since(t0)
		if st := rs.Stats(); st.Refused != 0 {
			fmt.Fprintf(os.Stderr, "generated rules refused: %v\n", rs.Refused()[0])
			os.Exit(1)
		}
		pal, alerts := runPalisade(rs, c)
		naive, naiveBytes := runNaive(rules, c, *budget)
		re, reBytes := runRegexp(rules, c, *budget)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%sx\t%sx\t\n", n, compile.Round(time.Millisecond), rate(pal), alerts,
			rate(naive), mbString(naiveBytes), rate(re), mbString(reBytes), rate(pal/naive), rate(pal/re))
		if n == 100 {
			first = pal
		}
		last = pal
	}
	tw.Flush()
	fmt.Printf("\nPalisade throughput at 10,000 rules / at 100 rules: %.2f\n", last/first)
}

func mbString(n int) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

// rate prints a figure with three significant digits at least.
func rate(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

type corpus struct {
	frames  []craft.Frame
	payload int
	flows   int
	vocab   []string // strings that occur in the corpus
}

var (
	methods  = []string{"GET", "GET", "GET", "GET", "POST", "HEAD", "PUT"}
	hosts    = []string{"www.example.com", "api.example.net", "cdn.static-files.org", "shop.example.co.uk", "intranet.corp.local", "news.example.info"}
	agents   = []string{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36", "curl/8.4.0", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "python-requests/2.31.0", "Go-http-client/1.1"}
	segments = []string{"api", "v1", "v2", "users", "products", "images", "static", "js", "css", "search", "cart", "checkout", "login", "account", "orders", "items", "assets", "docs"}
	words    = strings.Fields("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will more out up into do any your what some can only other time new could about than people my made first")
)

func genCorpus(seed int64, size int) *corpus {
	r := rand.New(rand.NewSource(seed))
	c := &corpus{vocab: append(append([]string{}, hosts...), agents...)}
	clock := &craft.Clock{Now: craft.Epoch, Step: 50 * time.Microsecond}
	ep := &craft.Endpoints{Clock: clock}
	for c.payload < size {
		c.flows++
		conn := ep.NewTCP(fmt.Sprintf("10.%d.%d.%d:%d", r.Intn(4), r.Intn(256), 1+r.Intn(250), 1024+r.Intn(60000)),
			fmt.Sprintf("192.0.2.%d:80", 1+r.Intn(250)))
		c.frames = append(c.frames, conn.Handshake()...)
		host := hosts[r.Intn(len(hosts))]
		agent := agents[r.Intn(len(agents))]
		for k := 1 + r.Intn(12); k > 0 && c.payload < size; k-- {
			req, resp := genExchange(r, host, agent)
			for _, part := range []struct {
				fromClient bool
				b          []byte
			}{{true, req}, {false, resp}} {
				for _, f := range conn.SendChunks(part.fromClient, part.b, 1448) {
					c.frames = append(c.frames, f)
				}
				c.payload += len(part.b)
			}
		}
		c.frames = append(c.frames, conn.Close()...)
	}
	return c
}

func genExchange(r *rand.Rand, host, agent string) ([]byte, []byte) {
	var path strings.Builder
	for i := 1 + r.Intn(4); i > 0; i-- {
		path.WriteString("/" + segments[r.Intn(len(segments))])
	}
	if r.Intn(3) == 0 {
		fmt.Fprintf(&path, "/%d", r.Intn(100000))
	}
	if r.Intn(2) == 0 {
		fmt.Fprintf(&path, "?q=%s&page=%d&sort=%s", words[r.Intn(len(words))], r.Intn(50), words[r.Intn(len(words))])
	}
	method := methods[r.Intn(len(methods))]
	body := ""
	if method == "POST" || method == "PUT" {
		body = fmt.Sprintf(`{"user":"%s","id":%d,"note":"%s %s %s"}`, words[r.Intn(len(words))], r.Intn(1e6), words[r.Intn(len(words))], words[r.Intn(len(words))], words[r.Intn(len(words))])
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: text/html,application/json;q=0.9,*/*;q=0.8\r\n"+
		"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nCookie: session=%016x; theme=dark\r\n",
		method, path.String(), host, agent, r.Uint64())
	if r.Intn(2) == 0 {
		fmt.Fprintf(&req, "Referer: https://%s/%s\r\n", host, segments[r.Intn(len(segments))])
	}
	if body != "" {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	} else {
		req.WriteString("\r\n")
	}
	var content bytes.Buffer
	if r.Intn(3) == 0 {
		content.WriteString(`{"items":[`)
		for i := 5 + r.Intn(200); i > 0; i-- {
			fmt.Fprintf(&content, `{"id":%d,"name":"%s %s","price":%d.%02d},`, r.Intn(1e6), words[r.Intn(len(words))], words[r.Intn(len(words))], r.Intn(500), r.Intn(100))
		}
		content.WriteString(`{}]}`)
	} else {
		content.WriteString("<!DOCTYPE html>\n<html><head><title>Example</title><link rel=\"stylesheet\" href=\"/static/css/site.css\"></head><body>\n")
		for i := 5 + r.Intn(300); i > 0; i-- {
			content.WriteString("<p>")
			for j := 5 + r.Intn(20); j > 0; j-- {
				content.WriteString(words[r.Intn(len(words))] + " ")
			}
			content.WriteString("</p>\n")
		}
		content.WriteString("</body></html>\n")
	}
	resp := fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Sat, 21 Nov 2026 05:36:00 GMT\r\nContent-Type: text/html; charset=utf-8\r\n"+
		"Content-Length: %d\r\nCache-Control: max-age=3600\r\n\r\n", content.Len())
	resp = append(resp, content.Bytes()...)
	if method == "HEAD" {
		resp = resp[:bytes.Index(resp, []byte("\r\n\r\n"))+4]
	}
	return req.Bytes(), resp
}

type ruleSet struct {
	text     string
	patterns []string
	nocase   []bool
}

const patternAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789_-./=%"

var attackStems = []string{"/cgi-bin/", "cmd.exe", ".php?", "select%20", "union+", "/etc/", "<script", "eval(", "wget%20", "../", "=http:", "/wp-", "base64,", "passwd", "%00", ".asp", "admin"}

func genRules(seed int64, n int, c *corpus) ruleSet {
	r := rand.New(rand.NewSource(seed))
	var b strings.Builder
	rs := ruleSet{}
	for i := 0; i < n; i++ {
		var pat string
		if r.Intn(100) == 0 {
			v := c.vocab[r.Intn(len(c.vocab))]
			start := r.Intn(max(1, len(v)-8))
			pat = v[start:min(len(v), start+6+r.Intn(6))]
		} else {
			var p strings.Builder
			p.WriteString(attackStems[r.Intn(len(attackStems))])
			for k := 4 + r.Intn(8); k > 0; k-- {
				p.WriteByte(patternAlphabet[r.Intn(len(patternAlphabet))])
			}
			pat = p.String()
		}
		nocase := r.Intn(10) < 3
		mod := ""
		if nocase {
			mod = " nocase;"
		}
		quoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `;`, `\;`, `|`, `|7c|`).Replace(pat)
		switch k := r.Intn(10); {
		case k < 8:
			fmt.Fprintf(&b, "alert tcp any any -> any any (msg:\"bench %d\"; flow:established,to_server; content:\"%s\";%s sid:%d; rev:1;)\n", i, quoted, mod, i+1)
		case k == 8:
			fmt.Fprintf(&b, "alert http any any -> any any (msg:\"bench %d\"; http.uri; content:\"%s\";%s sid:%d; rev:1;)\n", i, quoted, mod, i+1)
		default:
			buf := []string{"http.host", "http.user_agent"}[r.Intn(2)]
			fmt.Fprintf(&b, "alert http any any -> any any (msg:\"bench %d\"; %s; content:\"%s\";%s sid:%d; rev:1;)\n", i, buf, quoted, mod, i+1)
		}
		rs.patterns = append(rs.patterns, pat)
		rs.nocase = append(rs.nocase, nocase)
	}
	rs.text = b.String()
	return rs
}

type counter struct{ n int }

func (c *counter) Emit(*eve.Record) { c.n++ }

// runPalisade runs the whole engine (decode, flows, reassembly, HTTP,
// prefilter, rule evaluation) over every packet.
func runPalisade(rs *ips.RuleSet, c *corpus) (float64, int) {
	sink := &counter{}
	e := ips.New(rs, nil, ips.WithSink(sink))
	runtime.GC()
	t0 := time.Now()
	for i := range c.frames {
		f := &c.frames[i]
		e.Inspect(&engine.Packet{PacketID: uint64(i + 1), Time: f.Time, Link: engine.LinkRaw, Data: f.Data})
	}
	return float64(c.payload) / 1e6 / time.Since(t0).Seconds(), sink.n
}

func payloadOf(f []byte) []byte {
	ihl := int(f[0]&0x0f) * 4
	off := ihl + int(f[ihl+12]>>4)*4
	return f[off:]
}

// scanBounded applies scan to packet payloads until the corpus ends or the
// budget is spent, and returns MB/s over the bytes covered.
func scanBounded(c *corpus, budget time.Duration, scan func([]byte)) (float64, int) {
	runtime.GC()
	t0 := time.Now()
	covered := 0
	for i := range c.frames {
		p := payloadOf(c.frames[i].Data)
		if len(p) == 0 {
			continue
		}
		scan(p)
		covered += len(p)
		if time.Since(t0) > budget {
			break
		}
	}
	return float64(covered) / 1e6 / time.Since(t0).Seconds(), covered
}

var sinkHits int

func runNaive(rs ruleSet, c *corpus, budget time.Duration) (float64, int) {
	pats := make([][]byte, len(rs.patterns))
	lowered := make([][]byte, len(rs.patterns))
	for i, p := range rs.patterns {
		pats[i], lowered[i] = []byte(p), bytes.ToLower([]byte(p))
	}
	var low []byte
	return scanBounded(c, budget, func(p []byte) {
		low = ascii.AppendLower(low[:0], p)
		for i := range pats {
			hay, pat := p, pats[i]
			if rs.nocase[i] {
				hay, pat = low, lowered[i]
			}
			if bytes.Index(hay, pat) >= 0 {
				sinkHits++
			}
		}
	})
}

func runRegexp(rs ruleSet, c *corpus, budget time.Duration) (float64, int) {
	alts := make([]string, len(rs.patterns))
	for i, p := range rs.patterns {
		alts[i] = regexp.QuoteMeta(p)
		if rs.nocase[i] {
			alts[i] = "(?i:" + alts[i] + ")"
		}
	}
	re := regexp.MustCompile(strings.Join(alts, "|"))
	return scanBounded(c, budget, func(p []byte) {
		sinkHits += len(re.FindAllIndex(p, -1))
	})
}
