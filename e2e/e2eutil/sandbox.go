package e2eutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Engines the suites run on: the machine's docker.io and Debian forky's
// Docker 28.5 (scripts/docker-engine.sh), each in a sandbox of its own;
// "host" is the machine's running dockerd itself (no sandbox).
const (
	EngineMachine = "20.10"
	Engine28      = "28.5"
	EngineHost    = "host"
)

// EngineFromEnv is CALICO_E2E_ENGINE, by default the machine's engine in
// a sandbox.
func EngineFromEnv() string {
	if e := os.Getenv("CALICO_E2E_ENGINE"); e != "" {
		return e
	}
	return EngineMachine
}

// SandboxEnv names, inside a re-executed test, the sandbox it runs in.
const SandboxEnv = "CALICO_E2E_SANDBOX"

// InSandbox returns the sandbox directory this process runs in, or "".
func InSandbox() string { return os.Getenv(SandboxEnv) }

// FetchEngine makes sure the engine is in the tests' cache and returns its
// root ("/" for the machine's).
func FetchEngine(repo, engine string) (string, error) {
	out, err := exec.Command(filepath.Join(repo, "scripts", "docker-engine.sh"), "fetch", engine).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return "", fmt.Errorf("scripts/docker-engine.sh fetch %s: %v\n%s", engine, err, LastLines(stderr, 15))
	}
	return strings.TrimSpace(string(out)), nil
}

// EnginePath is the PATH with the engine's binaries (dockerd, docker,
// containerd, docker-compose) first.
func EnginePath(root string) string {
	path := os.Getenv("PATH")
	if root == "" || root == "/" {
		return path
	}
	return strings.Join([]string{filepath.Join(root, "usr/sbin"), filepath.Join(root, "usr/bin"),
		filepath.Join(root, "usr/libexec/docker/cli-plugins"), path}, ":")
}

// Sandbox is a private engine in namespaces of its own
// (scripts/plugin-sandbox.sh): fresh /run and /var/lib, its own network
// namespace with an uplink holding the default route, FORWARD policy DROP,
// dockerd with its own data root and containerd.
type Sandbox struct {
	Dir    string // short, under /tmp: DIR/docker.sock is the engine
	Engine string
	Root   string // the engine's root ("/": the machine's)
	script string
}

// StartSandbox starts one. Its namespace holder is killed with this
// process, however it ends, and every process of the sandbox with it.
func StartSandbox(repo, engine, daemonJSON string) (*Sandbox, error) {
	root, err := FetchEngine(repo, engine)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("/tmp", "cse2e-")
	if err != nil {
		return nil, err
	}
	s := &Sandbox{Dir: dir, Engine: engine, Root: root, script: filepath.Join(repo, "scripts", "plugin-sandbox.sh")}
	if err := s.hold(); err != nil {
		_ = s.Down()
		return nil, err
	}
	if daemonJSON == "" {
		daemonJSON = "{}"
	}
	c := exec.Command(s.script, "up", dir)
	c.Env = append(os.Environ(), "ENGINE_ROOT="+root, "SANDBOX_REGISTRY=0", "SANDBOX_DAEMON_JSON="+daemonJSON)
	if out, err := c.CombinedOutput(); err != nil {
		log := LastLines(readFile(filepath.Join(dir, "dockerd.log")), 20)
		_ = s.Down()
		return nil, fmt.Errorf("sandbox up (engine %s): %v\n%s\ndockerd.log:\n%s", engine, err, out, log)
	}
	return s, nil
}

func (s *Sandbox) hold() error {
	logf, err := os.Create(filepath.Join(s.Dir, "holder.log"))
	if err != nil {
		return err
	}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal follows the thread that forked the
		// child: keep this one until the holder is gone.
		runtime.LockOSThread()
		c := exec.Command(s.script, "hold", s.Dir)
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
		err := c.Start()
		started <- err
		if err == nil {
			_ = c.Wait()
		}
		logf.Close()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start the sandbox holder: %w", err)
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(filepath.Join(s.Dir, "holder.pid")); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the sandbox holder wrote no pid file; its log:\n%s", readFile(filepath.Join(s.Dir, "holder.log")))
}

// Down stops everything in the sandbox and removes its directory.
func (s *Sandbox) Down() error {
	out, err := exec.Command(s.script, "down", s.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sandbox down %s: %v\n%s", s.Dir, err, out)
	}
	return nil
}

// InitPID is the host PID of the sandbox's first process.
func (s *Sandbox) InitPID() int {
	n, _ := strconv.Atoi(strings.TrimSpace(readFile(filepath.Join(s.Dir, "init.pid"))))
	return n
}

// Command runs name inside the sandbox (its mount, network and PID
// namespaces), with the engine's binaries first in PATH and the docker CLI
// pointed at the sandbox's engine.
func (s *Sandbox) Command(env []string, name string, args ...string) *exec.Cmd {
	wd, _ := os.Getwd()
	// Entering the mount namespace resets the working directory: keep it.
	argv := append([]string{"-t", strconv.Itoa(s.InitPID()), "-m", "-n", "-p", "--wd=" + wd, "--", name}, args...)
	c := exec.Command("nsenter", argv...)
	c.Env = append(append(os.Environ(), env...), "PATH="+EnginePath(s.Root), SandboxEnv+"="+s.Dir,
		"CALICO_E2E_ENGINE="+s.Engine, "DOCKER_HOST=unix:///run/docker.sock")
	return c
}

// Reexec runs this test binary again inside a fresh sandbox with the same
// arguments, and returns its exit code. The sandbox goes down afterwards,
// taking every container, veth, route and rule of the run with it.
func Reexec(repo, engine string, env []string) (int, error) {
	s, err := StartSandbox(repo, engine, "")
	if err != nil {
		return 1, err
	}
	defer func() {
		if err := s.Down(); err != nil {
			fmt.Println("e2e:", err)
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return 1, err
	}
	ver, _ := exec.Command("docker", "-H", "unix://"+filepath.Join(s.Dir, "docker.sock"), "version", "--format", "{{.Server.Version}}").Output()
	fmt.Printf("e2e: running in a sandbox (%s) with Docker %s from %s\n", s.Dir, strings.TrimSpace(string(ver)), s.Root)
	c := s.Command(env, exe, os.Args[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// DockerLog is the sandbox engine's log.
func DockerLog(dir string) string { return readFile(filepath.Join(dir, "dockerd.log")) }

// RestartEngine stops the sandbox's dockerd (SIGTERM, as a host shutdown
// does) and starts it again, with daemonJSON as its daemon.json when not
// empty. It works from inside the sandbox too.
func RestartEngine(repo, dir, daemonJSON string) error {
	script := filepath.Join(repo, "scripts", "plugin-sandbox.sh")
	if out, err := exec.Command(script, "stop-docker", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("stop-docker: %v\n%s", err, out)
	}
	if daemonJSON != "" {
		if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(daemonJSON), 0o644); err != nil {
			return err
		}
	}
	if out, err := exec.Command(script, "start-docker", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("start-docker: %v\n%s\n%s", err, out, LastLines(DockerLog(dir), 20))
	}
	return nil
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(bytes.TrimRight(b, "\x00"))
}
