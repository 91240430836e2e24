// allot-supervise RUNDIR: starts one run of a job and stays with it until it ends, so that the job outlives
// allotd (in the manner of containerd's shim or conmon). It is on the path of every job start, so it is small
// C (about a millisecond to start) and it does the whole start itself, with no helper process:
//
//   1. reads RUNDIR/spec (written by allotd: NUL-terminated `key=value` records, format below);
//   2. makes the job's cgroup (cgroup v2, where allotd gives one) and starts the job straight into it
//      (clone3 with CLONE_INTO_CGROUP: no migration afterwards, which waits for RCU and costs milliseconds;
//      a kernel without it gets the job moved by writing cgroup.procs, as before);
//   3. in the child: its own process group, output to the log, as root the owner's groups, gid and uid,
//      then, as the owner, the owner's output file and working directory (ACLs and all), a fresh signal
//      state, and exec. A failure before the exec goes back to this process through a close-on-exec pipe;
//   4. records the job's pid and start time in RUNDIR/pid (allotd signals the job's group with it);
//   5. waits; kills what the job left behind (its cgroup, or its process group), removes the cgroup;
//   6. writes RUNDIR/status atomically and durably: {"exit_code":N|"signal":N,"error":"…","ended_at":T};
//   7. tells allotd at once over its socket (`job_exited`); if allotd is down it reads `status` later.
//
// The spec: the record `allot-run-spec=1` first, then id, run, uid, gid, workdir, log, socket once each;
// cgroup and output at most once; group, env (`NAME=VALUE`) and arg (the command, in order) repeated.
//
// An interactive run (`allotctl run`) also has `tty` (a Unix socket to listen on, for its owner only),
// `pty` (1: the job's terminal is a pseudo-terminal of this process; 0: pipes), `rows`, `cols` and `hangup`
// (seconds without a client before the job gets SIGHUP, then SIGKILL 10 s later). The client speaks
// frames: a type byte, a 4-byte big-endian length, the payload. Client to job: 'd' input, 'w' window size
// (rows and columns, 2 bytes each), 's' a signal for the job's process group (1 byte), 'e' end of input.
// Job to client: 'o' output, 'r' errors (pipes only), 'x' the end (`exit_code N` or `signal N`). Output made
// while no client is connected is kept (up to 1 MiB) for the next one.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/// clone3's arguments up to `cgroup` (CLONE_ARGS_SIZE_VER2), spelled here for older kernel headers.
struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
        cgroup;
};

#define SPEC_VERSION "1"
#define MAX_ITEMS 65536

struct spec {
    const char *id, *run, *uid, *gid, *workdir, *log, *socket, *cgroup, *output, *cpu_max, *memory_max;
    const char *tty, *pty, *rows, *cols, *hangup;
    char *args[MAX_ITEMS + 1];
    char *env[MAX_ITEMS + 1];
    gid_t groups[1024];
    size_t nargs, nenv, ngroups;
};

static const char *rundir;

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "allot-supervise: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/// Reads the whole file at `path` (NUL-terminated); NULL with errno set on failure.
static char *read_file(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return NULL; }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (buf) buf[got] = 0;
    *size = got;
    return buf;
}

/// Parses the spec; a message naming what is wrong, or NULL.
static const char *parse_spec(char *buf, size_t size, struct spec *s) {
    static char why[512];
    memset(s, 0, sizeof *s);
    size_t i = 0;
    int first = 1;
    while (i < size) {
        char *rec = buf + i;
        size_t len = strnlen(rec, size - i);
        if (i + len >= size) return "the last record is not terminated";
        i += len + 1;
        char *eq = strchr(rec, '=');
        if (!eq) { snprintf(why, sizeof why, "a record without '=': %.80s", rec); return why; }
        *eq = 0;
        char *v = eq + 1;
        if (first) {
            if (strcmp(rec, "allot-run-spec") != 0 || strcmp(v, SPEC_VERSION) != 0) {
                snprintf(why, sizeof why, "not a run spec of version %s (first record %.40s=%.40s)", SPEC_VERSION, rec, v);
                return why;
            }
            first = 0;
            continue;
        }
        if (strcmp(rec, "id") == 0) s->id = v;
        else if (strcmp(rec, "run") == 0) s->run = v;
        else if (strcmp(rec, "uid") == 0) s->uid = v;
        else if (strcmp(rec, "gid") == 0) s->gid = v;
        else if (strcmp(rec, "workdir") == 0) s->workdir = v;
        else if (strcmp(rec, "log") == 0) s->log = v;
        else if (strcmp(rec, "socket") == 0) s->socket = v;
        else if (strcmp(rec, "cgroup") == 0) s->cgroup = v;
        else if (strcmp(rec, "output") == 0) s->output = v;
        else if (strcmp(rec, "cpu_max") == 0) s->cpu_max = v;
        else if (strcmp(rec, "memory_max") == 0) s->memory_max = v;
        else if (strcmp(rec, "tty") == 0) s->tty = v;
        else if (strcmp(rec, "pty") == 0) s->pty = v;
        else if (strcmp(rec, "rows") == 0) s->rows = v;
        else if (strcmp(rec, "cols") == 0) s->cols = v;
        else if (strcmp(rec, "hangup") == 0) s->hangup = v;
        else if (strcmp(rec, "arg") == 0) { if (s->nargs == MAX_ITEMS) return "too many arguments"; s->args[s->nargs++] = v; }
        else if (strcmp(rec, "env") == 0) { if (s->nenv == MAX_ITEMS) return "too many variables"; s->env[s->nenv++] = v; }
        else if (strcmp(rec, "group") == 0) {
            if (s->ngroups == 1024) return "too many groups";
            s->groups[s->ngroups++] = (gid_t)strtoul(v, NULL, 10);
        } else { snprintf(why, sizeof why, "unknown key %.80s", rec); return why; }
    }
    if (first) return "it is empty";
    if (!s->id || !s->run || !s->uid || !s->gid || !s->workdir || !s->log || !s->socket)
        return "a required key (id, run, uid, gid, workdir, log, socket) is missing";
    if (s->nargs == 0) return "no command";
    s->args[s->nargs] = NULL;
    s->env[s->nenv] = NULL;
    return NULL;
}

/// Writes a limit into the job's cgroup before the job starts; where the controller is not delegated (or the
/// kernel refuses), says so in the job's log: the job runs, unlimited.
static void limit(const char *cgroup, const char *file, const char *value, const char *what, const char *controller,
                  int logfd) {
    if (!value) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", cgroup, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? write(fd, value, strlen(value)) : -1;
    int err = errno;
    if (fd >= 0) close(fd);
    if (n >= 0) return;
    char note[1024];
    int len = fd < 0 ? snprintf(note, sizeof note,
                                "allot: %s not limited: the job's cgroup has no %s controller (%s: %s); delegate %s to "
                                "allotd's cgroup (cgroup v2) to enforce them\n",
                                what, controller, path, strerror(err), controller)
                     : snprintf(note, sizeof note, "allot: %s not limited: writing %s to %s failed: %s\n", what, value,
                                path, strerror(err));
    if (len > 0 && logfd >= 0) (void)!write(logfd, note, (size_t)len);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void append(int fd, const char *fmt, ...) {
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) (void)!write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/// Writes `text` to RUNDIR/NAME through a temporary file and a rename; `durable`: fsync first.
static int write_atomically(const char *name, const char *text, int durable) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", rundir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { close(fd); unlink(tmp); return -1; }
        off += (size_t)n;
    }
    if (durable && fsync(fd) != 0) { close(fd); unlink(tmp); return -1; }
    close(fd);
    if (rename(tmp, path) != 0) { unlink(tmp); return -1; }
    return 0;
}

/// A process's start time (field 22 of /proc/PID/stat): with the pid, it names the process for good.
static unsigned long long start_time(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    // After the command name: state is field 3; the start time is field 22, the 20th after the name.
    for (int field = 0; field < 20 && p; field++) p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

/// The pids in a cgroup (at most `max`).
static size_t members(const char *cgroup, pid_t *out, size_t max) {
    char path[4200];
    snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
    size_t size = 0, n = 0;
    char *text = read_file(path, &size);
    if (!text) return 0;
    for (char *p = text; *p && n < max;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (v > 1) out[n++] = (pid_t)v;
        p = end;
        while (*p == '\n') p++;
    }
    free(text);
    return n;
}

/// Kills what is left of the job (its cgroup, else its process group) and waits up to 5 s for it to go.
/// Returns how many processes there were.
static size_t kill_all(const char *cgroup, pid_t group) {
    pid_t pids[4096];
    size_t count = cgroup ? members(cgroup, pids, 4096) : (kill(-group, 0) == 0 ? 1 : 0);
    if (count == 0) return 0;
    for (int round = 0; round < 100; round++) {
        kill(-group, SIGKILL);
        if (cgroup) {
            char path[4200];
            snprintf(path, sizeof path, "%s/cgroup.kill", cgroup);
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                (void)!write(fd, "1", 1);
                close(fd);
            } else {
                size_t n = members(cgroup, pids, 4096);
                for (size_t i = 0; i < n; i++) kill(pids[i], SIGKILL);
            }
        }
        int empty = cgroup ? members(cgroup, pids, 1) == 0 : kill(-group, 0) != 0;
        if (empty) break;
        usleep(50000);
    }
    return count;
}

/// JSON string contents for `s` (quotes, backslashes and control characters escaped).
static void json_escape(const char *s, char *out, size_t cap) {
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c < 0x20) o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        else out[o++] = (char)c;
    }
    out[o] = 0;
}

/// Tells allotd the run ended (best effort: when it is down it finds `status` when it comes back).
static void report(const struct spec *s) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(s->socket) >= sizeof addr.sun_path) { close(fd); return; }
    strcpy(addr.sun_path, s->socket);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        char line[256];
        int n = snprintf(line, sizeof line,
                         "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"job_exited\",\"params\":{\"id\":%s,\"run\":%s}}\n",
                         s->id, s->run);
        if (n > 0 && write(fd, line, (size_t)n) == n) {
            char answer[512];
            (void)!read(fd, answer, sizeof answer);
        }
    }
    close(fd);
}

/// The child, between clone and exec: only what is safe after a fork (this process has one thread).
/// A failure writes its reason to `err` and to the job's output, and ends the child with 126 or 127.
/// An interactive run's ends here: the pseudo-terminal's (master, slave name) or the pipes'.
static int pty_master = -1;
static char pty_slave[128];
static int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};

static void child(const struct spec *s, int logfd, int err, int joined) {
    char why[1200];
    int code = 126;
    if (pty_master >= 0) {
        // Its own session, with the pseudo-terminal as its controlling terminal.
        setsid();
        int t = open(pty_slave, O_RDWR);
        if (t < 0 || ioctl(t, TIOCSCTTY, 0) != 0) {
            snprintf(why, sizeof why, "cannot open its terminal %s: %s", pty_slave, strerror(errno));
            goto fail;
        }
        dup2(t, 0);
        dup2(t, 1);
        dup2(t, 2);
        if (t > 2) close(t);
    } else if (in_pipe[0] >= 0) {
        setpgid(0, 0);
        dup2(in_pipe[0], 0);
        dup2(out_pipe[1], 1);
        dup2(err_pipe[1], 2);
    } else {
        setpgid(0, 0);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0 && null != 0) { dup2(null, 0); close(null); }
        dup2(logfd, 1);
        dup2(logfd, 2);
    }
    if (s->cgroup && !joined) {
        char path[4200];
        snprintf(path, sizeof path, "%s/cgroup.procs", s->cgroup);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            snprintf(why, sizeof why, "cannot join the job's cgroup %s: %s", s->cgroup, strerror(errno));
            goto fail;
        }
        close(fd);
    }
    if (getuid() == 0) {
        uid_t uid = (uid_t)strtoul(s->uid, NULL, 10);
        gid_t gid = (gid_t)strtoul(s->gid, NULL, 10);
        if (setgroups(s->ngroups, s->groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
            snprintf(why, sizeof why, "cannot switch to uid %u: %s", (unsigned)uid, strerror(errno));
            goto fail;
        }
    }
    if (s->output && !s->tty) {
        int fd = open(s->output, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0) {
            snprintf(why, sizeof why, "cannot open the output file %s: %s", s->output, strerror(errno));
            goto fail;
        }
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2) close(fd);
    }
    if (chdir(s->workdir) != 0) {
        snprintf(why, sizeof why, "cannot enter the working directory %s: %s", s->workdir, strerror(errno));
        goto fail;
    }
    // As a fresh process: no signal blocked, none ignored.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    // The command is looked up on the job's PATH, not this process's.
    environ = (char **)s->env;
    execvp(s->args[0], s->args);
    code = errno == ENOENT ? 127 : 126;
    snprintf(why, sizeof why, "cannot run %s: %s", s->args[0], strerror(errno));
fail:
    (void)!write(err, why, strlen(why));
    append(2, "allot: %s\n", why);
    _exit(code);
}

// MARK: Interactive runs

static int client = -1;
static char *pending;          // output made while no client was connected
static size_t pending_len;
#define PENDING_MAX (1 << 20)

static int send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void frame(char type, const void *p, size_t n) {
    if (client < 0) {
        // Kept for the next client: as frames, in order.
        if (pending_len + 5 + n > PENDING_MAX) return;
        char *grown = realloc(pending, pending_len + 5 + n);
        if (!grown) return;
        pending = grown;
        unsigned char h[5] = {(unsigned char)type, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                              (unsigned char)(n >> 8), (unsigned char)n};
        memcpy(pending + pending_len, h, 5);
        memcpy(pending + pending_len + 5, p, n);
        pending_len += 5 + n;
        return;
    }
    unsigned char h[5] = {(unsigned char)type, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 8), (unsigned char)n};
    if (send_all(client, h, 5) != 0 || send_all(client, p, n) != 0) { close(client); client = -1; }
}

/// Reads what the job wrote on `fd` and sends it as `type` frames; returns 0 at the end of it.
static int pump(int fd, char type) {
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    if (n <= 0) return 0;  // EOF, or EIO: the terminal's last user is gone
    frame(type, buf, (size_t)n);
    return 1;
}

static void set_window(int rows, int cols) {
    if (pty_master < 0 || rows <= 0 || cols <= 0) return;
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    ioctl(pty_master, TIOCSWINSZ, &ws);
}

/// Serves the job's terminal until it exits and its output is out: accepts its owner's client, passes
/// input, window sizes and signals to the job, and output back. Hangs up on the job when no client has
/// been there for `hangup` seconds. Returns the job's wait status.
static int relay(const struct spec *s, pid_t pid, int listener) {
    int in_fd = pty_master >= 0 ? pty_master : in_pipe[1];
    int out_fd = pty_master >= 0 ? pty_master : out_pipe[0];
    int err_fd = pty_master >= 0 ? -1 : err_pipe[0];
    double hangup = s->hangup ? strtod(s->hangup, NULL) : 10;
    double alone_since = now_s(), hung_up_at = 0;
    int status = 0, exited = 0, told = 0, out_open = 1, err_open = err_fd >= 0;
    unsigned char in[65536 + 5];
    size_t in_len = 0;
    double exited_at = 0;
    for (;;) {
        if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
            exited = 1;
            exited_at = now_s();
            // What is left to read, without waiting for processes that keep the ends open.
            fcntl(out_fd, F_SETFL, O_NONBLOCK);
            if (err_fd >= 0) fcntl(err_fd, F_SETFL, O_NONBLOCK);
        }
        if (exited && !out_open && !err_open) {
            if (!told) {
                char text[64];
                int n = WIFSIGNALED(status) ? snprintf(text, sizeof text, "signal %d", WTERMSIG(status))
                                            : snprintf(text, sizeof text, "exit_code %d", WEXITSTATUS(status));
                frame('x', text, (size_t)n);
                told = 1;
            }
            // Done once a client has the end; without one, waits a little for one to take it.
            if (client >= 0 && pending_len == 0) break;
            if (now_s() - exited_at > (hangup < 30 ? hangup : 30)) break;
        }
        struct pollfd fds[4];
        int nf = 0, li = -1, ci = -1, oi = -1, ei = -1;
        fds[nf] = (struct pollfd){.fd = listener, .events = POLLIN}; li = nf++;
        if (client >= 0) { fds[nf] = (struct pollfd){.fd = client, .events = POLLIN}; ci = nf++; }
        if (out_open && pending_len < PENDING_MAX) { fds[nf] = (struct pollfd){.fd = out_fd, .events = POLLIN}; oi = nf++; }
        if (err_open && pending_len < PENDING_MAX) { fds[nf] = (struct pollfd){.fd = err_fd, .events = POLLIN}; ei = nf++; }
        int r = poll(fds, (nfds_t)nf, exited ? 20 : 100);
        if (r < 0 && errno != EINTR) break;
        if (exited && r == 0) {
            // Nothing more within 20 ms of the end: what is still open belongs to processes it left.
            out_open = 0;
            err_open = 0;
        }
        if (oi >= 0 && fds[oi].revents) out_open = pump(out_fd, 'o');
        if (ei >= 0 && fds[ei].revents) err_open = pump(err_fd, 'r');
        if (li >= 0 && (fds[li].revents & POLLIN)) {
            int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                if (client >= 0) close(client);  // the newest client takes the terminal
                client = c;
                in_len = 0;
                hung_up_at = 0;
                if (pending_len > 0 && send_all(client, pending, pending_len) == 0) pending_len = 0;
            }
        }
        if (ci >= 0 && client >= 0 && fds[ci].revents) {
            ssize_t n = read(client, in + in_len, sizeof in - in_len);
            if (n <= 0 && !(n < 0 && errno == EINTR)) {
                close(client);
                client = -1;
                alone_since = now_s();
            } else if (n > 0) {
                in_len += (size_t)n;
                size_t at = 0;
                while (in_len - at >= 5) {
                    size_t len = ((size_t)in[at + 1] << 24) | ((size_t)in[at + 2] << 16) | ((size_t)in[at + 3] << 8) | in[at + 4];
                    if (len > 65536) { close(client); client = -1; alone_since = now_s(); in_len = at = 0; break; }
                    if (in_len - at < 5 + len) break;
                    unsigned char *p = in + at + 5;
                    switch (in[at]) {
                    case 'd':
                        if (in_fd >= 0 && !exited) {
                            size_t off = 0;
                            while (off < len) {
                                ssize_t w = write(in_fd, p + off, len - off);
                                if (w < 0 && errno == EINTR) continue;
                                if (w <= 0) break;
                                off += (size_t)w;
                            }
                        }
                        break;
                    case 'w':
                        if (len == 4) set_window((p[0] << 8) | p[1], (p[2] << 8) | p[3]);
                        break;
                    case 's':
                        if (len == 1 && !exited) kill(-pid, p[0]);
                        break;
                    case 'e':
                        if (pty_master >= 0) {
                            // A terminal's end of input: its EOF character.
                            struct termios t;
                            if (tcgetattr(pty_master, &t) == 0) (void)!write(pty_master, &t.c_cc[VEOF], 1);
                        } else if (in_pipe[1] >= 0) {
                            close(in_pipe[1]);
                            in_pipe[1] = -1;
                            in_fd = -1;
                        }
                        break;
                    }
                    at += 5 + len;
                }
                memmove(in, in + at, in_len - at);
                in_len -= at;
            }
        }
        if (!exited && client < 0) {
            double alone = now_s() - alone_since;
            if (alone > hangup && hung_up_at == 0) {
                kill(-pid, SIGHUP);
                kill(-pid, SIGCONT);
                hung_up_at = now_s();
            } else if (hung_up_at > 0 && now_s() - hung_up_at > 10) {
                kill(-pid, SIGKILL);
            }
        }
    }
    if (client >= 0) close(client);
    return status;
}

/// Makes the run's ends (a pseudo-terminal or pipes) and its listening socket, for its owner only.
static int open_interactive(const struct spec *s, char *error, size_t cap) {
    uid_t uid = (uid_t)strtoul(s->uid, NULL, 10);
    gid_t gid = (gid_t)strtoul(s->gid, NULL, 10);
    if (s->pty && strcmp(s->pty, "1") == 0) {
        pty_master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (pty_master < 0 || grantpt(pty_master) != 0 || unlockpt(pty_master) != 0 ||
            ptsname_r(pty_master, pty_slave, sizeof pty_slave) != 0) {
            snprintf(error, cap, "cannot make a terminal: %s", strerror(errno));
            return -1;
        }
        if (getuid() == 0) (void)!chown(pty_slave, uid, (gid_t)-1);
        set_window(s->rows ? atoi(s->rows) : 24, s->cols ? atoi(s->cols) : 80);
    } else if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
        snprintf(error, cap, "cannot make pipes: %s", strerror(errno));
        return -1;
    }
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (l < 0 || strlen(s->tty) >= sizeof addr.sun_path) {
        snprintf(error, cap, "cannot listen at %s: %s", s->tty, l < 0 ? strerror(errno) : "path too long");
        return -1;
    }
    strcpy(addr.sun_path, s->tty);
    unlink(s->tty);
    mode_t old = umask(0077);
    int b = bind(l, (struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (b != 0 || listen(l, 4) != 0) {
        snprintf(error, cap, "cannot listen at %s: %s", s->tty, strerror(errno));
        close(l);
        return -1;
    }
    if (getuid() == 0) (void)!chown(s->tty, uid, gid);
    return l;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: allot-supervise RUNDIR\n(started by allotd for each run of a job; see allotd(8))\n");
        return 2;
    }
    rundir = argv[1];
    char path[4200];
    snprintf(path, sizeof path, "%s/spec", rundir);
    size_t size = 0;
    char *buf = read_file(path, &size);
    if (!buf) { say("cannot read %s: %s", path, strerror(errno)); return 1; }
    static struct spec s;
    const char *bad = parse_spec(buf, size, &s);
    if (bad) { say("%s is not a valid run spec: %s", path, bad); return 1; }

    char error[1200] = "";
    int exit_code = 127, signo = 0;
    pid_t pid = -1;
    // allotd's log for the job is opened here (as root) and given to the owner, who can read it.
    int logfd = open(s.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (logfd < 0) {
        snprintf(error, sizeof error, "cannot open the log file %s: %s", s.log, strerror(errno));
        goto done;
    }
    if (getuid() == 0) (void)!fchown(logfd, (uid_t)strtoul(s.uid, NULL, 10), (gid_t)strtoul(s.gid, NULL, 10));
    int cgfd = -1;
    if (s.cgroup) {
        if (mkdir(s.cgroup, 0755) != 0 && errno != EEXIST) {
            snprintf(error, sizeof error, "cannot make the job's cgroup %s: %s", s.cgroup, strerror(errno));
            goto done;
        }
        cgfd = open(s.cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        limit(s.cgroup, "cpu.max", s.cpu_max, "CPUs", "cpu", logfd);
        limit(s.cgroup, "memory.max", s.memory_max, "memory", "memory", logfd);
    }
    int listener = -1;
    if (s.tty) {
        signal(SIGPIPE, SIG_IGN);  // a job that closed its input, a client gone: errors, not deaths
        listener = open_interactive(&s, error, sizeof error);
        if (listener < 0) goto done;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(error, sizeof error, "cannot start %s: pipe: %s", s.args[0], strerror(errno));
        goto done;
    }
    fflush(NULL);
    int joined = 0;
    if (cgfd >= 0) {
        struct clone_args_v2 ca;
        memset(&ca, 0, sizeof ca);
        ca.flags = CLONE_INTO_CGROUP;
        ca.exit_signal = SIGCHLD;
        ca.cgroup = (uint64_t)cgfd;
        pid = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
        if (pid == 0) child(&s, logfd, pipefd[1], 1);
        joined = pid > 0;
    }
    if (pid < 0) {
        // No clone3 or no CLONE_INTO_CGROUP (Linux < 5.7): the child joins by writing cgroup.procs.
        pid = fork();
        if (pid == 0) child(&s, logfd, pipefd[1], 0);
    }
    close(pipefd[1]);
    if (pid < 0) {
        snprintf(error, sizeof error, "cannot start %s: %s", s.args[0], strerror(errno));
        close(pipefd[0]);
        goto done;
    }
    (void)joined;
    // The pid first, so that allotd can signal the job as soon as possible (not fsynced: a crash of the
    // machine ends the job too).
    char line[128];
    snprintf(line, sizeof line, "%d %llu\n", (int)pid, start_time(pid));
    if (write_atomically("pid", line, 0) != 0) say("cannot write %s/pid: %s", rundir, strerror(errno));
    // Until the exec (the pipe closes: nothing read) or a failure before it (its reason).
    char child_error[1200];
    ssize_t got = 0, n;
    while ((n = read(pipefd[0], child_error + got, sizeof child_error - 1 - (size_t)got)) != 0) {
        if (n < 0) { if (errno == EINTR) continue; break; }
        got += n;
        if ((size_t)got >= sizeof child_error - 1) break;
    }
    close(pipefd[0]);
    child_error[got > 0 ? got : 0] = 0;
    int status = 0;
    if (listener >= 0) {
        // The job's ends belong to it now.
        if (in_pipe[0] >= 0) { close(in_pipe[0]); close(out_pipe[1]); close(err_pipe[1]); }
        status = relay(&s, pid, listener);
        close(listener);
        unlink(s.tty);
    } else {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    }
    if (WIFSIGNALED(status)) { signo = WTERMSIG(status); exit_code = -1; }
    else exit_code = WEXITSTATUS(status);
    if (got > 0) snprintf(error, sizeof error, "%s", child_error);
    // The leader is gone: what it left behind (daemonised children, workers) goes too, before the GPUs are
    // given to anyone else.
    size_t left = kill_all(s.cgroup, pid);
    if (left > 0) append(logfd, "allot: killed %zu process%s the job left behind\n", left, left == 1 ? "" : "es");
    if (s.cgroup) {
        for (int i = 0; i < 50; i++) {
            if (rmdir(s.cgroup) == 0 || errno == ENOENT) break;
            usleep(20000);
        }
    }
done:
    if (error[0] && pid < 0 && logfd >= 0) append(logfd, "allot: %s\n", error);
    {
        char escaped[2600], text[3000];
        json_escape(error, escaped, sizeof escaped);
        int o = signo ? snprintf(text, sizeof text, "{\"signal\":%d", signo)
                      : snprintf(text, sizeof text, "{\"exit_code\":%d", exit_code);
        if (error[0]) o += snprintf(text + o, sizeof text - (size_t)o, ",\"error\":\"%s\"", escaped);
        snprintf(text + o, sizeof text - (size_t)o, ",\"ended_at\":%.6f}\n", now_s());
        if (write_atomically("status", text, 1) != 0) {
            say("cannot write %s/status: %s", rundir, strerror(errno));
            return 1;
        }
    }
    report(&s);
    return 0;
}
