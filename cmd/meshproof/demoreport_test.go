package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/internal/meshsim"
)

// TestDemoReports runs `meshproof demo` until every client of the story
// has been recorded, then the `meshproof report tls-check` it prints: the
// seed's table, built from the demo's traffic through serve --kubernetes's
// informers and Istio watch. istioctl authn tls-check's columns come
// first; httpbin is PERMISSIVE by httpbin.mtls-pg and its clients are
// configured ISTIO_MUTUAL by the DestinationRule; every client is named by
// its workload (the plaintext one legacy/deployment/legacy); the forger's
// XFCC makes the row SUSPECT. Then strict-readiness -n mtls-pg, which
// names httpbin by its workload, not by its service account (default).
func TestDemoReports(t *testing.T) {
	out, _, done, stop := startDemo(t)
	server := waitMatch(t, out, regexp.MustCompile(`The page:\s+(http://127\.0\.0\.1:\d+)/ui/\n`), done)[1]
	api, err := client.New(server, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	waitVerdicts(t, api, evidence.MTLS, evidence.Plaintext, evidence.XFCCUnverified)

	// The command as the demo prints it.
	printed := regexp.MustCompile(`(?m)^  meshproof (report tls-check .+)$`).FindStringSubmatch(out.String())
	if printed == nil {
		t.Fatalf("the demo prints no tls-check command:\n%s", out)
	}
	code, stdout, stderr := cli(t, strings.Fields(printed[1])...)
	rcode, readiness, rstderr := cli(t, "report", "strict-readiness", "--server", server, "-n", demoNamespace)
	stop()
	if code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", printed[0], code, stdout, stderr)
	}
	rows := tableRows(t, stdout, "HOST:PORT / CLIENT")
	if want := []string{"HOST:PORT / CLIENT", "STATUS", "SERVER", "CLIENT", "AUTHN POLICY", "DESTINATION RULE", "PRINCIPAL", "MTLS", "REQUESTS", "LAST SEEN"}; !slices.Equal(rows[0], want) {
		t.Fatalf("header %q, want %q:\n%s", rows[0], want, stdout)
	}
	var got [][]string
	for _, r := range rows[1:] {
		got = append(got, r[:7]) // the traffic's counts and times vary
	}
	want := [][]string{
		{meshsim.Host, "SUSPECT", "HTTP/mTLS", "mTLS", "httpbin.mtls-pg/PERMISSIVE", "httpbin.mtls-pg/ISTIO_MUTUAL", meshsim.ServerID},
		// The clients, by workload, each with what it sent; the
		// DestinationRule is the row's for all of them.
		{"mtls-pg/deployment/sleep", "", "", "mTLS", "", "", meshsim.SleepID},
		{"legacy/deployment/legacy", "", "", "HTTP", "", "", "-"},
		// The forger's XFCC without a client certificate is why the row
		// is SUSPECT.
		{"legacy/pod/forger", "xfcc_unverified", "", "HTTP", "", "", "-"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("tls-check:\n got %q\nwant %q\n%s", got, want, stdout)
	}
	if note := "\n  legacy/pod/forger to " + meshsim.Host + ": xfcc_unverified: no client certificate; xfcc header without client certificate"; !strings.Contains(stdout, note) {
		t.Errorf("no note %q:\n%s", note, stdout)
	}
	if !strings.Contains(stdout, "\n1 destination: 0 OK, 0 PLAINTEXT, 1 SUSPECT, 0 CONFLICT.\n") {
		t.Errorf("no summary line of one SUSPECT destination:\n%s", stdout)
	}

	// strict-readiness -n mtls-pg: httpbin, named by its workload, is not
	// ready (legacy's plaintext, the forger's XFCC).
	if rcode != 3 {
		t.Fatalf("strict-readiness -n %s: exit %d, want 3\n%s%s", demoNamespace, rcode, readiness, rstderr)
	}
	rows = tableRows(t, readiness, "  WORKLOAD")
	if len(rows) != 2 || !slices.Equal(rows[1][:2], []string{"mtls-pg/deployment/httpbin", "NOT READY"}) ||
		rows[1][len(rows[1])-1] != meshsim.ServerID {
		t.Errorf("strict-readiness -n %s's destinations: %q, want httpbin's workload, NOT READY, its principal\n%s", demoNamespace, rows, readiness)
	}
}

// tableRows reads the table of out whose header begins with first: the
// header's names (columns are two or more spaces apart, a name has single
// spaces), then each line's cells, cut at the header's columns (tabwriter
// aligns every cell with its header), up to the first empty line.
func tableRows(t *testing.T, out, first string) [][]string {
	t.Helper()
	lines := strings.Split(out, "\n")
	at := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, first) })
	if at < 0 {
		t.Fatalf("no table headed %q:\n%s", first, out)
	}
	header := []rune(lines[at])
	cols := regexp.MustCompile(`\S+( \S+)*`).FindAllStringIndex(string(header), -1)
	starts := make([]int, len(cols)) // in runes
	names := make([]string, len(cols))
	for i, c := range cols {
		starts[i] = len([]rune(string(header)[:c[0]]))
		names[i] = string(header)[c[0]:c[1]]
	}
	rows := [][]string{names}
	for _, l := range lines[at+1:] {
		if l == "" {
			break
		}
		line := []rune(l)
		cells := make([]string, len(starts))
		for i, s := range starts {
			end := len(line)
			if i+1 < len(starts) {
				end = min(starts[i+1], len(line))
			}
			if s < len(line) {
				cells[i] = strings.TrimSpace(string(line[s:end]))
			}
		}
		rows = append(rows, cells)
	}
	return rows
}
