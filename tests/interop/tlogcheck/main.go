// Command tlogcheck proves a record of the registry's ledger with Go's own
// transparency-log code (golang.org/x/mod/sumdb/tlog and sumdb/note), so that
// the ledger's tiles and checkpoints are checked by a standard tlog-tiles client
// and not only by the Python code that wrote them.
//
// Given a directory that mirrors the bucket's ledger/ objects (checkpoint,
// tile/<L>/<N>[.p/<W>], rows/<N>[.p/<W>]) it:
//
//  1. opens <dir>/checkpoint (or --checkpoint) with note.Open and the verifier key, and reads the
//     C2SP tlog-checkpoint body (origin, size, base64 root);
//  2. builds tlog.TileHashReader over a tlog.TileReader that reads the C2SP tile
//     files (Go names tiles tile/<H>/<L>/...; C2SP drops the height, fixed at 8);
//  3. proves the record with tlog.ProveRecord and checks the proof with
//     tlog.CheckRecord against tlog.RecordHash(leaf) and the checkpoint root;
//  4. recomputes tlog.TreeHash(size) both through the authenticating
//     TileHashReader and through a plain, unauthenticated reader of the tile
//     files, and compares both with the checkpoint root.
//
// Optional: --rows takes the leaf from the entry bundle (and, with --leaf-file,
// requires both to agree); --all-tiles checks every tile the checkpoint's size
// requires (tlog.NewTiles) through the authenticating reader, and with --rows
// every entry bundle against its level-0 tile. --paths only prints the C2SP
// paths Go gives tiles (one tile, or all tiles of a tree size), for comparing
// the path encoding and the set of published tiles themselves.
//
// It prints one line of JSON and exits 0 only if every check holds; 1 if a
// check fails (the JSON says which stage and why); 2 on bad usage.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is fixed by C2SP tlog-tiles: 256 hashes per full tile.
const tileHeight = 8

const fullWidth = 1 << tileHeight

type result struct {
	OK             bool     `json:"ok"`
	Stage          string   `json:"stage,omitempty"`
	Error          string   `json:"error,omitempty"`
	Origin         string   `json:"origin,omitempty"`
	Size           int64    `json:"size"`
	Root           string   `json:"root,omitempty"`
	Index          int64    `json:"index"`
	RecordHash     string   `json:"record_hash,omitempty"`
	ProofLen       int      `json:"proof_len"`
	TreeHash       string   `json:"tree_hash,omitempty"`
	Extensions     int      `json:"extension_lines"`
	ObjectsRead    int      `json:"objects_read"`
	TilesChecked   int      `json:"tiles_checked"`
	BundlesChecked int      `json:"bundles_checked"`
	Fallbacks      []string `json:"full_tile_fallbacks,omitempty"`
}

type failure struct {
	stage string
	err   error
}

func fail(stage string, format string, args ...any) *failure {
	return &failure{stage, fmt.Errorf(format, args...)}
}

func main() {
	var (
		dir      = flag.String("dir", "", "directory mirroring the bucket's ledger/ objects (holds checkpoint, tile/, rows/)")
		cpFile   = flag.String("checkpoint", "", "checkpoint to verify against (default <dir>/checkpoint), e.g. an older one a monitor kept")
		vkey     = flag.String("vkey", "", "verifier key of the log, name+hash+base64 (Go note format)")
		origin   = flag.String("origin", "", "expected checkpoint origin line")
		index    = flag.Int64("index", -1, "index of the record to prove")
		leafFile = flag.String("leaf-file", "", "file holding the record's bytes (the leaf data)")
		rows     = flag.Bool("rows", false, "also read the record from its entry bundle rows/<N>[.p/<W>]")
		allTiles = flag.Bool("all-tiles", false, "check every tile (and with --rows every bundle) of the checkpoint's size")
		fallback = flag.Bool("allow-full-fallback", false, "read a full tile's prefix when a partial tile is missing (C2SP allows logs to delete partials once full)")
		paths    = flag.Bool("paths", false, "only print C2SP tile paths (per tlog.Tile.Path) for stdin lines \"L N W\" (one tile) or \"size S\" (tlog.NewTiles(8, 0, S))")
	)
	flag.Parse()
	if *paths {
		printPaths()
		return
	}
	res := result{Index: *index}
	if *dir == "" || *vkey == "" || *origin == "" || *index < 0 || (*leafFile == "" && !*rows) || flag.NArg() != 0 {
		res.Stage, res.Error = "usage", "need --dir, --vkey, --origin, --index >= 0, and --leaf-file and/or --rows"
		emit(res, 2)
	}
	if *cpFile == "" {
		*cpFile = filepath.Join(*dir, "checkpoint")
	}
	if f := run(&res, *dir, *cpFile, *vkey, *origin, *index, *leafFile, *rows, *allTiles, *fallback); f != nil {
		res.OK, res.Stage, res.Error = false, f.stage, f.err.Error()
		emit(res, 1)
	}
	res.OK = true
	emit(res, 0)
}

func emit(res result, code int) {
	enc := json.NewEncoder(os.Stdout) // one line, newline-terminated
	enc.SetEscapeHTML(false)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(res *result, dir, cpFile, vkey, origin string, index int64, leafFile string, rows, allTiles, fallback bool) *failure {
	// 1. The checkpoint: signature first, then the text.
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return fail("usage", "verifier key: %v", err)
	}
	msg, err := os.ReadFile(cpFile)
	if err != nil {
		return fail("checkpoint", "%v", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return fail("checkpoint", "note.Open: %v", err)
	}
	tree, ext, err := parseCheckpoint(n.Text, origin)
	if err != nil {
		return fail("checkpoint", "%v", err)
	}
	res.Origin, res.Size, res.Root, res.Extensions = origin, tree.N, tree.Hash.String(), ext
	if index >= tree.N {
		return fail("index", "index %d is not in the tree of size %d", index, tree.N)
	}

	tiles := &dirTiles{dir: dir, fallback: fallback, cache: map[string][]byte{}}
	defer func() { res.ObjectsRead, res.Fallbacks = len(tiles.cache), tiles.fallbacks }()
	hashes := tlog.TileHashReader(tree, tiles)

	// The leaf: from --leaf-file, from the entry bundle, or both (they must agree).
	var leaf []byte
	if leafFile != "" {
		if leaf, err = os.ReadFile(leafFile); err != nil {
			return fail("leaf", "%v", err)
		}
	}
	if rows {
		bundle, err := readBundle(tiles, index/fullWidth, tree.N)
		if err != nil {
			return fail("rows", "%v", err)
		}
		fromRows := bundle[index%fullWidth]
		if leafFile != "" && !bytes.Equal(leaf, fromRows) {
			return fail("rows", "record %d in its entry bundle differs from --leaf-file", index)
		}
		leaf = fromRows
	}
	recordHash := tlog.RecordHash(leaf)
	res.RecordHash = recordHash.String()

	// 2-3. Inclusion: prove through the tiles, check against the signed root.
	proof, err := tlog.ProveRecord(tree.N, index, hashes)
	if err != nil {
		return fail("prove", "tlog.ProveRecord: %v", err)
	}
	res.ProofLen = len(proof)
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, recordHash); err != nil {
		return fail("check", "tlog.CheckRecord: %v", err)
	}

	// 4. The root, recomputed through the authenticating reader and from the
	// raw tile files (the latter does not take the root as given).
	th, err := tlog.TreeHash(tree.N, hashes)
	if err != nil {
		return fail("tree_hash", "tlog.TreeHash (tile hash reader): %v", err)
	}
	if th != tree.Hash {
		return fail("tree_hash", "tlog.TreeHash (tile hash reader) = %v, checkpoint root %v", th, tree.Hash)
	}
	raw, err := tlog.TreeHash(tree.N, rawHashes{tiles, tree.N})
	if err != nil {
		return fail("tree_hash", "tlog.TreeHash (raw tiles): %v", err)
	}
	if raw != tree.Hash {
		return fail("tree_hash", "tlog.TreeHash (raw tiles) = %v, checkpoint root %v", raw, tree.Hash)
	}
	res.TreeHash = raw.String()

	if allTiles {
		for _, t := range tlog.NewTiles(tileHeight, 0, tree.N) {
			// ReadTileData goes through TileHashReader, which authenticates the
			// tile (and its parents) against the checkpoint root first.
			want, err := tlog.ReadTileData(t, hashes)
			if err != nil {
				return fail("all_tiles", "%s: %v", c2spPath(t), err)
			}
			got, err := tiles.read(t)
			if err != nil {
				return fail("all_tiles", "%v", err)
			}
			if !bytes.Equal(want, got) {
				return fail("all_tiles", "%s: differs from the tree Go authenticated", c2spPath(t))
			}
			res.TilesChecked++
			if rows && t.L == 0 {
				bundle, err := readBundle(tiles, t.N, tree.N)
				if err != nil {
					return fail("all_tiles", "%v", err)
				}
				for i, entry := range bundle {
					if h := tlog.RecordHash(entry); !bytes.Equal(h[:], want[i*tlog.HashSize:(i+1)*tlog.HashSize]) {
						return fail("all_tiles", "record %d: its hash is not leaf hash %d of %s", t.N*fullWidth+int64(i), i, c2spPath(t))
					}
				}
				res.BundlesChecked++
			}
		}
	}
	return nil
}

// parseCheckpoint reads a C2SP tlog-checkpoint body: origin, decimal size
// without leading zeros, standard base64 root, then optional extension lines
// (counted, otherwise ignored, as the C2SP checkpoint format asks of clients).
func parseCheckpoint(text, origin string) (tlog.Tree, int, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return tlog.Tree{}, 0, fmt.Errorf("checkpoint: %d lines, need origin, size and root", len(lines))
	}
	if lines[0] != origin {
		return tlog.Tree{}, 0, fmt.Errorf("checkpoint: origin %q, expected %q", lines[0], origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || lines[1] != strconv.FormatInt(size, 10) {
		return tlog.Tree{}, 0, fmt.Errorf("checkpoint: malformed size %q", lines[1])
	}
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tlog.Tree{}, 0, fmt.Errorf("checkpoint: malformed root %q", lines[2])
	}
	for _, ext := range lines[3:] {
		if ext == "" {
			return tlog.Tree{}, 0, errors.New("checkpoint: empty extension line")
		}
	}
	tree := tlog.Tree{N: size}
	copy(tree.Hash[:], root)
	return tree, len(lines) - 3, nil
}

// printPaths answers --paths. Each input line is either "L N W" (one tile:
// print its C2SP path) or "size S" (print the C2SP paths of every tile a tree
// of S records publishes, tlog.NewTiles(8, 0, S)), one path per line.
func printPaths() {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var size int64
		if _, err := fmt.Sscanf(in.Text(), "size %d", &size); err == nil && size >= 0 {
			for _, t := range tlog.NewTiles(tileHeight, 0, size) {
				fmt.Fprintln(out, c2spPath(t))
			}
			continue
		}
		var t tlog.Tile
		if _, err := fmt.Sscanf(in.Text(), "%d %d %d", &t.L, &t.N, &t.W); err != nil ||
			t.L < 0 || t.L > 63 || t.N < 0 || t.W < 1 || t.W > fullWidth {
			out.Flush()
			fmt.Fprintf(os.Stderr, "bad line %q: want \"L N W\" (0 <= L <= 63, N >= 0, 1 <= W <= %d) or \"size S\"\n", in.Text(), fullWidth)
			os.Exit(2)
		}
		t.H = tileHeight
		fmt.Fprintln(out, c2spPath(t))
	}
}

// c2spPath maps Go's tile path tile/<H>/<L>/<N>[.p/<W>] to C2SP's
// tile/<L>/<N>[.p/<W>] (the height is fixed at 8 and not in the path).
func c2spPath(t tlog.Tile) string {
	goPath := t.Path()
	prefix := fmt.Sprintf("tile/%d/", t.H)
	if t.H != tileHeight || t.L < 0 || !strings.HasPrefix(goPath, prefix) {
		panic(fmt.Sprintf("tlogcheck: tile %s is not a C2SP hash tile", goPath))
	}
	return "tile/" + strings.TrimPrefix(goPath, prefix)
}

// bundlePath is rows/<N>[.p/<W>], with N encoded like a tile index.
func bundlePath(n int64, w int) string {
	p := strings.TrimPrefix(c2spPath(tlog.Tile{H: tileHeight, L: 0, N: n, W: w}), "tile/0/")
	return "rows/" + p
}

// dirTiles is a tlog.TileReader over C2SP tile files in a directory.
// It hands Go the bytes as stored; TileHashReader checks lengths and hashes.
type dirTiles struct {
	dir       string
	fallback  bool
	cache     map[string][]byte
	fallbacks []string
}

func (d *dirTiles) Height() int { return tileHeight }

func (d *dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := d.read(t)
		if err != nil {
			return nil, err
		}
		data[i] = b
	}
	return data, nil
}

func (d *dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func (d *dirTiles) read(t tlog.Tile) ([]byte, error) {
	full := t
	full.W = fullWidth
	b, fromFull, err := d.readObject(c2spPath(t), c2spPath(full))
	if err != nil {
		return nil, err
	}
	if fromFull {
		if len(b) < t.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, too short for %s", c2spPath(full), len(b), c2spPath(t))
		}
		b = b[:t.W*tlog.HashSize]
	}
	return b, nil
}

// readObject reads path (cached). If path is a missing partial object and
// fallbacks are allowed, it reads fullPath instead and says so.
func (d *dirTiles) readObject(path, fullPath string) (data []byte, fromFull bool, err error) {
	if b, ok := d.cache[path]; ok {
		return b, false, nil
	}
	if b, ok := d.cache[fullPath]; ok && path != fullPath && d.fallback {
		if _, err := os.Stat(filepath.Join(d.dir, filepath.FromSlash(path))); errors.Is(err, fs.ErrNotExist) {
			return b, true, nil
		}
	}
	b, err := os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(path)))
	if errors.Is(err, fs.ErrNotExist) && d.fallback && path != fullPath {
		if fb, ferr := os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(fullPath))); ferr == nil {
			d.cache[fullPath] = fb
			d.fallbacks = append(d.fallbacks, path+" <- "+fullPath)
			return fb, true, nil
		}
	}
	if err != nil {
		return nil, false, err
	}
	d.cache[path] = b
	return b, false, nil
}

// readBundle reads entry bundle n of a tree of the given size and splits it
// into records: each record's bytes followed by "\n", as many as the bundle's width.
func readBundle(d *dirTiles, n, size int64) ([][]byte, error) {
	w := int(min(size-n*fullWidth, fullWidth))
	p := bundlePath(n, w)
	b, fromFull, err := d.readObject(p, bundlePath(n, fullWidth))
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%s: empty or does not end with a newline", p)
	}
	records := bytes.Split(b[:len(b)-1], []byte("\n"))
	if fromFull {
		if len(records) != fullWidth {
			return nil, fmt.Errorf("%s: %d records, want %d", bundlePath(n, fullWidth), len(records), fullWidth)
		}
		return records[:w], nil
	}
	if len(records) != w {
		return nil, fmt.Errorf("%s: %d records, want %d", p, len(records), w)
	}
	return records, nil
}

// rawHashes reads stored hashes straight from the tile files, without
// authenticating them: tlog.TreeHash over it recomputes the root from the
// tiles alone.
type rawHashes struct {
	d    *dirTiles
	size int64
}

func (r rawHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		t := tlog.TileForIndex(tileHeight, x)
		// Widen to the tile published for this tree size.
		t.W = int(min(r.size>>(tileHeight*t.L)-t.N*fullWidth, fullWidth))
		data, err := r.d.read(t)
		if err != nil {
			return nil, err
		}
		if len(data) != t.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, want %d", c2spPath(t), len(data), t.W*tlog.HashSize)
		}
		if out[i], err = tlog.HashFromTile(t, data, x); err != nil {
			return nil, err
		}
	}
	return out, nil
}
