//go:build e2e

package multihost

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A run directory records its owner (the test process) as "PID STARTTIME":
// a run whose owner is gone was killed before its cleanup ran, and its
// leftovers (processes, namespaces, files) are swept by the next run.

func procStartTime(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	s := string(b)
	// The command name (field 2) may hold spaces: fields count from its ")".
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", false
	}
	return f[19], true // field 22: starttime
}

func ownerToken() string {
	st, _ := procStartTime(os.Getpid())
	return fmt.Sprintf("%d %s", os.Getpid(), st)
}

func writeOwner(dir string) error {
	return os.WriteFile(filepath.Join(dir, "owner"), []byte(ownerToken()+"\n"), 0o644)
}

func ownerAlive(token string) bool {
	f := strings.Fields(token)
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	st, ok := procStartTime(pid)
	return ok && st == f[1]
}

func runAlive(id string) bool {
	b, err := os.ReadFile(filepath.Join(baseDir, id, "owner"))
	return err == nil && ownerAlive(strings.TrimSpace(string(b)))
}

// Sweep removes what killed runs left: every run directory and namespace
// carrying our prefix whose owner process is gone. Live runs (another test
// process running now) are left alone.
func Sweep(logf func(string, ...any)) {
	ids := map[string]bool{}
	if ents, err := os.ReadDir(baseDir); err == nil {
		for _, e := range ents {
			name := e.Name()
			switch {
			case strings.HasPrefix(name, "bin-"):
				tok := strings.ReplaceAll(strings.TrimPrefix(name, "bin-"), "-", " ")
				if !ownerAlive(tok) {
					_ = os.RemoveAll(filepath.Join(baseDir, name))
				}
			case strings.HasPrefix(name, namePrefix):
				ids[name] = true
			}
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), namePrefix) {
				if id, _, ok := strings.Cut(e.Name(), "-"); ok {
					ids[id] = true
				}
			}
		}
	}
	for id := range ids {
		if runAlive(id) {
			continue
		}
		logf("sweeping leftovers of an earlier, killed run %s", id)
		if left := cleanupRun(id, logf); left != "" {
			logf("sweep of %s incomplete: %s", id, left)
		}
	}
}

// cleanupRun kills every process of run id (those in its host namespaces,
// those in its containers, and those started from its directory), deletes
// its namespaces and its directory. It returns what it could not remove.
func cleanupRun(id string, logf func(string, ...any)) string {
	dir := filepath.Join(baseDir, id)
	var nsNames []string
	inodes := map[string]bool{}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), id+"-") {
				nsNames = append(nsNames, e.Name())
				var st syscall.Stat_t
				if syscall.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil {
					inodes[fmt.Sprintf("net:[%d]", st.Ino)] = true
				}
			}
		}
	}
	var containerIDs []string
	if ms, err := filepath.Glob(filepath.Join(dir, "h*", "docker", "containers", "*")); err == nil {
		for _, m := range ms {
			containerIDs = append(containerIDs, filepath.Base(m))
		}
	}
	ours := func(pid int) bool {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && inodes[l] {
			return true
		}
		if len(containerIDs) > 0 {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
				for _, cid := range containerIDs {
					if strings.Contains(string(b), cid) {
						return true
					}
				}
			}
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(b), dir+"/") {
			return true
		}
		return false
	}
	self := os.Getpid()
	for round := 0; round < 50; round++ {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self || pid == 1 {
				continue
			}
			if ours(pid) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			break
		}
		if round == 0 {
			logf("cleanup %s: killing %d leftover process(es)", id, len(pids))
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var left []string
	for _, n := range nsNames {
		if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
			left = append(left, fmt.Sprintf("netns %s (%v: %s)", n, err, strings.TrimSpace(string(out))))
		}
	}
	// Container cgroups runc could not remove (their processes were killed).
	for _, cid := range containerIDs {
		ms, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "docker", cid))
		for _, m := range ms {
			_ = syscall.Rmdir(m)
		}
		_ = syscall.Rmdir(filepath.Join("/sys/fs/cgroup", "docker", cid))
	}
	if err := removeAllRetry(dir); err != nil {
		left = append(left, fmt.Sprintf("directory %s (%v)", dir, err))
	}
	return strings.Join(left, "; ")
}

func removeAllRetry(dir string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}
