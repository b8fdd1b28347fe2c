// Package firstbyte is the format of the benchmark upstream's per-blob
// log lines (loadtest/registry writes them, loadtest/bench reads them):
// when a blob GET arrived and when its first byte was written, so that the
// harness can tell the upstream's share of a herd's first byte.
package firstbyte

import "time"

// Msg is the msg of every such line.
const Msg = "blob first byte"

// Line is one blob answer as the registry logs it, one JSON object a line.
type Line struct {
	Msg    string `json:"msg"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Remote string `json:"remote"`
	// Arrived is when the registry began handling the request (its own
	// request start, dcontext's http.request.startedat); FirstByte when
	// the blob store first wrote to the response.
	Arrived   time.Time `json:"arrived"`
	FirstByte time.Time `json:"first_byte"`
	Status    int       `json:"status"`
}
