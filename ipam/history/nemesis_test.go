package history

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

// nemesis injects one fault at a time into the cluster and heals it: a
// member killed with SIGKILL and restarted on its data, the leader killed,
// the leader cut off from its peers while its clients still reach it, the
// leader's process stopped (SIGSTOP), or two members killed at once (no
// quorum). Faults are dealt from a shuffled deck, so that every kind comes
// up in every eight steps however short the run.
type nemesis struct {
	c    *cluster
	rng  *rand.Rand
	log  *os.File
	deck []fault
}

type fault int

const (
	killOne fault = iota
	killLeader
	isolateLeader
	pauseLeader
	loseQuorum
)

var deck = []fault{killOne, killOne, killLeader, isolateLeader, isolateLeader, pauseLeader, loseQuorum, killLeader}

func (n *nemesis) logf(format string, a ...any) {
	fmt.Fprintf(n.log, "%s t=%.3f "+format+"\n", append([]any{time.Now().Format("15:04:05.000"), float64(Now()) / 1e9}, a...)...)
}

func (n *nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)))
}

func (n *nemesis) running() []*member {
	var out []*member
	for _, m := range n.c.members {
		if m.running() {
			out = append(out, m)
		}
	}
	return out
}

// step injects one fault, waits, heals it, and waits a moment more.
func (n *nemesis) step(ctx context.Context) error {
	if len(n.deck) == 0 {
		n.deck = append([]fault(nil), deck...)
		n.rng.Shuffle(len(n.deck), func(i, j int) { n.deck[i], n.deck[j] = n.deck[j], n.deck[i] })
	}
	f := n.deck[0]
	n.deck = n.deck[1:]
	var err error
	switch f {
	case killOne:
		err = n.killSome(ctx, 1, nil)
	case killLeader:
		if l := n.c.leader(ctx); l != nil {
			n.c.faults.LeaderKills++
			err = n.killSome(ctx, 1, l)
		} else {
			err = n.killSome(ctx, 1, nil)
		}
	case isolateLeader:
		err = n.isolateLeader(ctx)
	case pauseLeader:
		n.pauseLeader(ctx)
	case loseQuorum:
		n.c.faults.QuorumLosses++
		err = n.killSome(ctx, 2, nil)
	}
	if err != nil {
		return err
	}
	sleep(ctx, n.between(time.Second, 3*time.Second))
	return nil
}

// killSome kills k members (first, when given, then random running ones),
// keeps them down for a while and restarts them.
func (n *nemesis) killSome(ctx context.Context, k int, first *member) error {
	var victims []*member
	if first != nil {
		victims = append(victims, first)
	}
	for _, m := range n.rng.Perm(3) {
		mm := n.c.members[m]
		if len(victims) < k && mm != first && mm.running() {
			victims = append(victims, mm)
		}
	}
	for _, m := range victims {
		n.logf("kill -9 %s (pid %d)", m.name, m.cmd.Process.Pid)
		m.kill()
	}
	sleep(ctx, n.between(time.Second, 3*time.Second))
	for _, m := range victims {
		if err := m.restart(); err != nil {
			return err
		}
		n.logf("restarted %s (pid %d)", m.name, m.cmd.Process.Pid)
	}
	return nil
}

func (n *nemesis) isolateLeader(ctx context.Context) error {
	l := n.c.leader(ctx)
	if l == nil {
		n.logf("no leader to isolate; killing a member instead")
		return n.killSome(ctx, 1, nil)
	}
	if err := l.isolate(); err != nil {
		return err
	}
	n.logf("isolated leader %s from its peers", l.name)
	sleep(ctx, n.between(2*time.Second, 5*time.Second))
	if err := l.rejoin(); err != nil {
		return err
	}
	n.logf("rejoined %s", l.name)
	return nil
}

// pauseLeader stops the leader's process for a while: requests it took
// stay unanswered, and it wakes up to find another leader.
func (n *nemesis) pauseLeader(ctx context.Context) {
	l := n.c.leader(ctx)
	if l == nil {
		return
	}
	l.pause()
	n.logf("paused leader %s (SIGSTOP)", l.name)
	sleep(ctx, n.between(2*time.Second, 5*time.Second))
	l.resume()
	n.logf("resumed %s", l.name)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
