#!/usr/bin/env python3
"""`cleanroom console`: an interactive terminal in a real QEMU sandbox,
driven through a real pseudo-terminal on the host (as a user's terminal).

- the guest command runs on a pty of the guest's devpts (`tty`), of the host
  terminal's size; a host resize (SIGWINCH) reaches the guest (`stty size`);
  typed input is echoed back; the exit code comes through;
- stdin that is not a terminal is still forwarded, and its end is the
  terminal's ^D;
- execution.resize of an execution without a tty is invalid_argument; the
  tty flag is on the execution record.

Needs CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_IMAGE_TAR."""
import fcntl, os, pty, select, signal, struct, subprocess, sys, termios, time, unittest

sys.dont_write_bytecode = True  # no __pycache__ in the checkout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

crtest.vm_enabled()
D = None
SID = None


def setUpModule():
    global D, SID
    D = crtest.Daemon("console").__enter__()
    D.import_test_image()
    p = D.cr("sandbox", "create", "--image", crtest.IMAGE, "--memory", crtest.MEM, check=True)
    SID = p.stdout.decode().split()[-1]


def tearDownModule():
    if D:
        D.stop()


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """`cleanroom ARGS` on a new host pty (its own session, the pty its
    controlling terminal), read until a marker with a deadline."""

    def __init__(self, args, rows=30, cols=100):
        self.m, s = pty.openpty()
        set_size(s, rows, cols)

        def ctty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.p = subprocess.Popen([D.bin, *args], stdin=s, stdout=s, stderr=s, env=D.env,
                                  preexec_fn=ctty)
        os.close(s)
        self.out = b""

    def expect(self, marker, timeout=120):
        deadline = time.monotonic() + timeout
        while marker not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} within {timeout} s; got {self.out[-2000:]!r}")
            r, _, _ = select.select([self.m], [], [], min(left, 1))
            if r:
                try:
                    d = os.read(self.m, 65536)
                except OSError:  # EIO: the other side closed
                    d = b""
                if not d:
                    raise AssertionError(f"EOF before {marker!r}; got {self.out[-2000:]!r}")
                self.out += d
        i = self.out.index(marker) + len(marker)
        seen, self.out = self.out[:i], self.out[i:]
        return seen

    def send(self, data):
        os.write(self.m, data)

    def resize(self, rows, cols):
        set_size(self.m, rows, cols)  # the kernel sends SIGWINCH to the foreground group

    def wait(self, timeout=120):
        deadline = time.monotonic() + timeout
        while self.p.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.m], [], [], 0.5)
            if r:
                try:
                    self.out += os.read(self.m, 65536)
                except OSError:
                    pass
        if self.p.poll() is None:
            self.p.kill()
        return self.p.wait(timeout=30)

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        os.close(self.m)


class Console(unittest.TestCase):
    def test_1_terminal_size_resize_exit(self):
        t = Terminal(["console", "--in", SID, "--", "sh"], rows=30, cols=100)
        try:
            t.send(b"tty; stty size; echo X$((6*7))\r")
            seen = t.expect(b"X42")
            self.assertIn(b"X$((6*7))", seen)  # typed input is echoed by the guest's tty
            out = t.expect(b"\n/")  # the next prompt
            self.assertIn(b"/dev/pts/", seen + out)
            self.assertIn(b"30 100", seen + out)
            t.resize(40, 120)
            t.send(b"stty size; echo R$((1+1))\r")
            self.assertIn(b"40 120", t.expect(b"R2"))
            t.send(b"exit 3\r")
            self.assertEqual(t.wait(), 3, t.out)
        finally:
            t.close()

    def test_2_piped_stdin_and_eof(self):
        p = D.cr("console", "--in", SID, "--", "sh", "-c", "read x; echo got:$x; cat; echo end",
                 input=b"hello\nmore\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.replace(b"\r\n", b"\n")
        self.assertIn(b"got:hello\n", out)  # the tty's output is all on stdout
        self.assertIn(b"end\n", out)  # end of stdin reached the guest as ^D

    def test_3_resize_needs_a_tty(self):
        r = D.rpc("execution.create", {"sandbox_id": SID, "argv": ["sleep", "30"], "attach": False})
        eid = r["result"]["execution_id"]
        r = D.rpc("execution.resize", {"execution_id": eid, "rows": 10, "cols": 10})
        self.assertEqual(r["error"]["data"]["reason"], "invalid_argument", r)
        r = D.rpc("execution.resize", {"execution_id": eid, "rows": 0, "cols": 10})
        self.assertEqual(r["error"]["data"]["reason"], "invalid_argument", r)
        D.rpc("execution.cancel", {"execution_id": eid, "signal": "KILL"})
        r = D.rpc("execution.create", {"sandbox_id": SID, "argv": ["true"], "tty": True,
                                       "rows": 70000, "attach": False})
        self.assertEqual(r["error"]["data"]["reason"], "invalid_argument", r)
        r = D.rpc("execution.create", {"sandbox_id": SID, "argv": ["true"], "tty": True,
                                       "attach": False})
        w = D.rpc("execution.wait", {"execution_id": r["result"]["execution_id"]})
        self.assertEqual(w["result"]["exit_code"], 0, w)
        self.assertIs(w["result"].get("tty"), True, w)

    def test_4_usage(self):
        p = D.cr("console", "--bogus")
        self.assertEqual(p.returncode, 2, p.stderr)
        p = D.cr("console", "--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"pseudo-terminal", p.stdout)


if __name__ == "__main__":
    signal.alarm(600)  # the whole file's deadline
    unittest.main(verbosity=2)
