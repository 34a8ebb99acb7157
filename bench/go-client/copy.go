package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	pb "berth/bench/go-client/gen/plugin/v1alpha"
	"google.golang.org/grpc"
)

// chunkSize is what the runner puts in one CopyIn message.
const chunkSize = 256 << 10

type copyInResult struct {
	TarBytes int64   `json:"tarBytes"`
	Seconds  float64 `json:"seconds"`
	cost
}

type copyOutResult struct {
	TarBytes  int64   `json:"tarBytes"`
	FileBytes int64   `json:"fileBytes"`
	Files     int64   `json:"files"`
	Seconds   float64 `json:"seconds"`
	cost
}

// chunkSender is the tar writer's output: it fills one buffer and sends it as
// a CopyIn message each time it is full. The first message also names the
// environment and the destination; later ones carry data only.
//
// The buffer and the message are reused: grpc-go's codec marshals the message
// into a buffer of its own before SendMsg returns, and this client installs no
// stats handler or tracer that could look at the message later.
type chunkSender struct {
	stream grpc.ClientStreamingClient[pb.CopyInChunk, pb.CopyInResponse]
	msg    pb.CopyInChunk
	buf    []byte
	sent   int64
	// err is why sending failed, told apart from a failure to read the local files.
	err error
}

func (w *chunkSender) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n := copy(w.buf[len(w.buf):cap(w.buf)], p[written:])
		w.buf = w.buf[:len(w.buf)+n]
		written += n
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *chunkSender) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.msg.Data = w.buf
	if err := w.stream.Send(&w.msg); err != nil {
		if errors.Is(err, io.EOF) {
			// The server ended the call early; its status says why.
			_, err = w.stream.CloseAndRecv()
		}
		w.err = fmt.Errorf("copyin: %w", err)
		return w.err
	}
	w.sent += int64(len(w.buf))
	w.msg.EnvironmentId, w.msg.DestPath = nil, nil
	w.buf = w.buf[:0]
	return nil
}

func copyIn(ctx context.Context, client pb.BackendPluginClient, env, dest, dir, name string) (jsonResult, error) {
	started := time.Now()
	stream, err := client.CopyIn(ctx)
	if err != nil {
		return nil, fmt.Errorf("copyin: %w", err)
	}
	w := &chunkSender{stream: stream, buf: make([]byte, 0, chunkSize)}
	w.msg.EnvironmentId, w.msg.DestPath = &env, &dest
	if err := packDir(w, dir, name); err != nil {
		if w.err != nil {
			return nil, w.err
		}
		return nil, err
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return nil, fmt.Errorf("copyin: %w", err)
	}
	return &copyInResult{TarBytes: w.sent, Seconds: time.Since(started).Seconds()}, nil
}

// readerOnly hides a file's WriteTo, so that io.CopyBuffer uses the buffer it
// is given instead of allocating one of its own for every file.
type readerOnly struct{ io.Reader }

// packDir writes the tar of directory dir to w as `docker cp` does, its
// entries under name/: directories, regular files and symbolic links, walked
// in lexical order, each file read as it is written.
func packDir(w io.Writer, dir, name string) error {
	tw := tar.NewWriter(w)
	copyBuf := make([]byte, chunkSize)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch mode := info.Mode(); {
		case mode.IsDir(), mode.IsRegular():
		case mode&fs.ModeSymlink != 0:
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: not a directory, regular file or symbolic link (%s)", path, mode.Type())
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		hdr.Name = name
		if rel != "." {
			hdr.Name += "/" + filepath.ToSlash(rel)
		}
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		return copyFile(tw, path, copyBuf)
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return tw.Close()
}

func copyFile(w io.Writer, path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyBuffer(w, readerOnly{f}, buf)
	return err
}

// chunkReader reads a CopyOut stream as one byte stream, counting its bytes.
type chunkReader struct {
	stream grpc.ServerStreamingClient[pb.CopyOutChunk]
	msg    pb.CopyOutChunk
	rest   []byte
	total  int64
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if err := r.stream.RecvMsg(&r.msg); err != nil {
			if !errors.Is(err, io.EOF) {
				err = fmt.Errorf("copyout: %w", err)
			}
			r.err = err
			return 0, err
		}
		r.rest = r.msg.GetData()
		r.total += int64(len(r.rest))
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

func copyOut(ctx context.Context, client pb.BackendPluginClient, env, src string) (jsonResult, error) {
	started := time.Now()
	stream, err := client.CopyOut(ctx, &pb.CopyOutRequest{EnvironmentId: env, SrcPath: src})
	if err != nil {
		return nil, fmt.Errorf("copyout: %w", err)
	}
	r := &chunkReader{stream: stream}
	res := &copyOutResult{}
	tr := tar.NewReader(r)
	buf := make([]byte, chunkSize)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("copyout: not a valid tar after %d bytes: %w", r.total, err)
		}
		if !hdr.FileInfo().Mode().IsRegular() {
			continue
		}
		// Read, not skipped by size: a file cut short is an error here.
		n, err := drain(tr, buf)
		if err != nil {
			return nil, fmt.Errorf("copyout: %s: %w", hdr.Name, err)
		}
		res.Files++
		res.FileBytes += n
	}
	// What follows the tar's end (the padding to a whole record) and the call's status.
	if _, err := drain(r, buf); err != nil {
		return nil, err
	}
	res.TarBytes = r.total
	res.Seconds = time.Since(started).Seconds()
	return res, nil
}

// drain reads r to its end into buf and counts the bytes. (io.Copy to
// io.Discard would read in io.Discard's own 8 KiB pieces.)
func drain(r io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
