package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/palisade/palisade/hypervisor/localapi"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspectd"
)

// inspectionFlags configure live inspection of the fast path's punts.
type inspectionFlags struct {
	engines      engineFlags
	eve          string
	offloadAfter int
	dropMarker   string
	workers      int
}

func (f *inspectionFlags) register(fs *pflag.FlagSet) {
	f.engines.register(fs)
	fs.StringVar(&f.eve, "eve", "", "file to append EVE JSON alerts to (default: none; alerts still go to the fast path)")
	fs.IntVar(&f.offloadAfter, "offload-after", engine.DefaultOffloadAfter,
		"offload a flow after this many packets (both directions) once no engine needs more; 0: never")
	fs.StringVar(&f.dropMarker, "drop-marker", "", "test aid: drop and block any flow whose packet payload contains this string")
	fs.IntVar(&f.workers, "workers", runtime.GOMAXPROCS(0), "inspection workers (flows are spread over them)")
}

// inspection is the running service and what it was built from.
type inspection struct {
	svc   *inspectd.Service
	files *engineFiles
	eve   string
}

// start loads the engine files and starts the service. Any bad file stops
// the daemon here, naming the file and line.
func (f *inspectionFlags) start(log logrus.FieldLogger) (*inspection, error) {
	if f.offloadAfter < 0 {
		return nil, fmt.Errorf("--offload-after %d: want 0 (never) or more", f.offloadAfter)
	}
	if f.workers < 1 {
		return nil, fmt.Errorf("--workers %d: want at least 1", f.workers)
	}
	files, err := f.engines.load()
	if err != nil {
		return nil, err
	}
	files.logRefused(log)
	var out *eve.Writer
	if f.eve != "" {
		if out, err = eve.OpenFile(f.eve); err != nil {
			return nil, err
		}
	}
	svc, err := inspectd.New(inspectd.Config{Workers: f.workers, EVE: out, Log: log}, func(sink eve.Sink) (engine.Engine, error) {
		var chain engine.Chain
		if f.dropMarker != "" {
			chain = append(chain, engine.NewDropMarker(f.dropMarker))
		}
		chain = append(chain, files.engines(sink, engineOptions{skipEmptyRules: true, log: log})...)
		return append(chain, engine.NewOffloadAfter(f.offloadAfter)), nil
	})
	if err != nil {
		if out != nil {
			_ = out.Close()
		}
		return nil, err
	}
	fields := logrus.Fields{"engines": svc.Stats().Engines, "workers": f.workers, "offload_after": f.offloadAfter}
	if files.rules != nil {
		fields["rules"] = files.rules.Len()
		if files.rules.Len() == 0 {
			log.Warn("no rules loaded from --rules: the IPS is off")
		}
	}
	if files.feed != nil {
		fields["wrs_entries"] = files.feed.Len()
	}
	if f.dropMarker != "" {
		log.WithField("marker", f.dropMarker).Warn("test aid on: packets carrying the drop marker are dropped")
	}
	log.WithFields(fields).Info("inspection ready")
	return &inspection{svc: svc, files: files, eve: f.eve}, nil
}

// inspectionStatus is GET /v1/inspection.
type inspectionStatus struct {
	inspectd.Stats
	Rules      *int   `json:"rules,omitempty"`
	WRSEntries *int   `json:"wrs_entries,omitempty"`
	EVEFile    string `json:"eve_file,omitempty"`
}

func (i *inspection) status() inspectionStatus {
	st := inspectionStatus{Stats: i.svc.Stats(), EVEFile: i.eve}
	if i.files.rules != nil {
		n := i.files.rules.Len()
		st.Rules = &n
	}
	if i.files.feed != nil {
		n := i.files.feed.Len()
		st.WRSEntries = &n
	}
	return st
}

// inspectionCommand is `slowpathd inspection`: the live inspection counters.
func inspectionCommand(socket *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspection",
		Short: "show live inspection: punts, verdicts, flow decisions, alerts, queue stalls, latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st inspectionStatus
			if err := localapi.NewClient(*socket).Do(cmd.Context(), http.MethodGet, "/v1/inspection", nil, &st); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			var extra [][2]string
			if st.Rules != nil {
				extra = append(extra, [2]string{"rules", fmt.Sprint(*st.Rules)})
			}
			if st.WRSEntries != nil {
				extra = append(extra, [2]string{"web reputation", fmt.Sprintf("%d entries", *st.WRSEntries)})
			}
			if st.EVEFile != "" {
				extra = append(extra, [2]string{"EVE file", st.EVEFile})
			}
			st.Print(cmd.OutOrStdout(), extra...)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
