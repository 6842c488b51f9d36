package main

import (
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/ips"
	"github.com/palisade/palisade/slowpath/wrs"
)

// engineFlags are the engine options the daemon and `slowpathd inspect`
// share.
type engineFlags struct {
	rules  []string
	config string
	feeds  []string
}

func (f *engineFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.rules, "rules", nil, "Suricata rules file (repeatable)")
	fs.StringVar(&f.config, "config", "", "YAML config: vars, stream depth, web-reputation policy (see docs/ips.md)")
	fs.StringArrayVar(&f.feeds, "wrs-feed", nil, "web reputation feed file (repeatable)")
}

// engineFiles is what the engine flags loaded.
type engineFiles struct {
	cfg      *ips.Config
	policies *wrs.Policies
	rules    *ips.RuleSet // nil without --rules
	feed     *wrs.Feed    // nil without --wrs-feed
}

// load reads the config, rules and feeds. An unreadable file, a bad config
// and a bad feed line are errors naming the file (and line); refused rules
// are listed by the rule set for the caller to judge.
func (f *engineFlags) load() (*engineFiles, error) {
	l := &engineFiles{cfg: ips.DefaultConfig(), policies: &wrs.Policies{}}
	var err error
	if f.config != "" {
		if l.cfg, err = ips.LoadConfig(f.config); err != nil {
			return nil, err
		}
		if l.policies, err = wrs.LoadPolicies(f.config); err != nil {
			return nil, err
		}
	}
	if len(f.rules) > 0 {
		if l.rules, err = ips.LoadFiles(l.cfg, f.rules...); err != nil {
			return nil, err
		}
	}
	if len(f.feeds) > 0 {
		if l.feed, err = wrs.LoadFeeds(f.feeds...); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// logRefused reports a rule set as the issue asks: every refused rule with
// its sid and reason, and the totals. The rules that load are enforced; the
// refused ones are not loaded at all (never half-loaded), and the operator
// sees which.
func (l *engineFiles) logRefused(log logrus.FieldLogger) {
	if l.rules == nil {
		return
	}
	for _, r := range l.rules.Refused() {
		log.WithField("reason", r.Error()).Warn("rule refused")
	}
	log.WithFields(logrus.Fields{"loaded": l.rules.Len(), "refused": len(l.rules.Refused())}).Info("rules loaded")
}

// engineOptions are how the engines are built: offline or live.
type engineOptions struct {
	verifyChecksums bool               // offline only: GSO punts carry unfinished checksums
	skipEmptyRules  bool               // live: an IPS without rules would only keep flows from being offloaded
	log             logrus.FieldLogger // nil: the engines' default
}

// engines builds the IPS (with rules) and then web reputation (with feeds),
// both emitting to sink.
func (l *engineFiles) engines(sink eve.Sink, o engineOptions) engine.Chain {
	var chain engine.Chain
	if l.rules != nil && (l.rules.Len() > 0 || !o.skipEmptyRules) {
		chain = append(chain, ips.New(l.rules, l.cfg, ips.WithSink(sink), ips.WithChecksumValidation(o.verifyChecksums)))
	}
	if l.feed != nil {
		opts := []wrs.Option{wrs.WithSink(sink), wrs.WithChecksumValidation(o.verifyChecksums)}
		if o.log != nil {
			opts = append(opts, wrs.WithLogger(o.log))
		}
		chain = append(chain, wrs.New(l.feed, l.policies, opts...))
	}
	return chain
}
