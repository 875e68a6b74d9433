// Command fanout-example fetches URLs through fanoutd and handles each result as it
// arrives (standard library only).
//
//	go run . URL...     one batch document of these URLs
//	go run . < urls     a streamed batch: each line of stdin is sent as it is read
//
// The daemon is $FANOUTD (unix:/path or HOST:PORT), by default unix:/run/fanoutd/fanoutd.sock.
// Prints "INDEX STATUS URL" (or "INDEX ERROR-KIND URL") per result, then the summary;
// exits 1 if any request got an error instead of a response, 2 if the batch was refused.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
)

// Result is one line of the NDJSON answer: a request's result, or the final summary.
type Result struct {
	Index   int    `json:"index"`
	URL     string `json:"url"`
	Status  int    `json:"status"`
	Error   *struct{ Kind, Message string }
	Summary *struct{ Total, Responses, Errors int }
}

// client returns an http.Client for $FANOUTD and the base URL to use with it.
func client(addr string) (*http.Client, string) {
	if !strings.HasPrefix(addr, "unix:") {
		return http.DefaultClient, "http://" + addr
	}
	path := strings.TrimPrefix(addr, "unix:")
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}}, "http://localhost"
}

func main() {
	addr := os.Getenv("FANOUTD")
	if addr == "" {
		addr = "unix:/run/fanoutd/fanoutd.sock"
	}
	hc, base := client(addr)
	options := map[string]any{"concurrency": 64, "body": "none"} // no bodies: just the outcome

	var body io.Reader
	contentType := "application/json"
	if urls := os.Args[1:]; len(urls) > 0 {
		doc, _ := json.Marshal(map[string]any{"requests": urls, "options": options})
		body = bytes.NewReader(doc)
	} else {
		// A streamed batch: an options line, then one request (a URL string or an object)
		// per line, written as stdin gives them while the results below come back.
		pr, pw := io.Pipe()
		go func() {
			enc := json.NewEncoder(pw) // each value on its own line
			enc.Encode(map[string]any{"options": options})
			lines := bufio.NewScanner(os.Stdin)
			for lines.Scan() {
				if url := strings.TrimSpace(lines.Text()); url != "" {
					enc.Encode(url)
				}
			}
			pw.CloseWithError(lines.Err())
		}()
		body, contentType = pr, "application/x-ndjson"
	}

	req, _ := http.NewRequest("POST", base+"/v1/batch", body)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanoutd:", err)
		os.Exit(3)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // refused as a whole: {"error": {"kind": ..., "message": ...}}
		var refusal Result
		json.NewDecoder(resp.Body).Decode(&refusal)
		fmt.Fprintf(os.Stderr, "fanoutd: %d %s: %s\n", resp.StatusCode, refusal.Error.Kind, refusal.Error.Message)
		os.Exit(2)
	}

	// One JSON object per line, each as soon as its request finishes. A result embeds its
	// body (unless "body": "none"), so allow lines as long as the largest one expected.
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 64*1024), 64<<20)
	for lines.Scan() {
		var r Result
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			fmt.Fprintln(os.Stderr, "fanoutd:", err)
			os.Exit(3)
		}
		switch {
		case r.Summary != nil:
			s := r.Summary
			fmt.Printf("summary: %d total, %d responses, %d errors\n", s.Total, s.Responses, s.Errors)
			if s.Errors > 0 {
				os.Exit(1)
			}
			return
		case r.Error != nil:
			fmt.Println(r.Index, r.Error.Kind, r.URL)
		default:
			fmt.Println(r.Index, r.Status, r.URL)
		}
	}
	fmt.Fprintln(os.Stderr, "fanoutd: the connection closed before the summary:", lines.Err())
	os.Exit(3)
}
