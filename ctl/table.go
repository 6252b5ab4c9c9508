package ctl

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// writeColumns prints rows under a header as calicoctl's `get` does: columns
// padded with three spaces, no borders.
func writeColumns(w io.Writer, header []string, rows [][]string) error {
	return writeAligned(w, "", append([][]string{header}, rows...))
}

// writeAligned prints rows in columns padded with three spaces, each line
// starting with indent and without trailing blanks.
func writeAligned(w io.Writer, indent string, rows [][]string) error {
	var buf strings.Builder
	tw := tabwriter.NewWriter(&buf, 5, 1, 3, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range strings.SplitAfter(buf.String(), "\n") {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(w, indent+strings.TrimRight(l, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// plural is "1 problem", "2 problems", "3 addresses".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	if strings.HasSuffix(word, "s") {
		return fmt.Sprintf("%d %ses", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

var numberRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// writeBox prints a bordered table as calicoctl's `ipam show` does: headers
// centred, numbers right-aligned, other cells left-aligned.
func writeBox(w io.Writer, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if n := utf8.RuneCountInString(c); n > widths[i] {
				widths[i] = n
			}
		}
	}
	var sep strings.Builder
	sep.WriteString("+")
	for _, wd := range widths {
		sep.WriteString(strings.Repeat("-", wd+2) + "+")
	}
	line := func(cells []string, align func(i int, c string) string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + align(i, c) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	fmt.Fprintln(w, sep.String())
	line(header, func(i int, c string) string {
		gap := widths[i] - utf8.RuneCountInString(c)
		return strings.Repeat(" ", gap/2) + c + strings.Repeat(" ", gap-gap/2)
	})
	fmt.Fprintln(w, sep.String())
	for _, r := range rows {
		line(r, func(i int, c string) string {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if numberRE.MatchString(c) {
				return pad + c
			}
			return c + pad
		})
	}
	fmt.Fprintln(w, sep.String())
}
