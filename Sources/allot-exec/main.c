// allot-exec: what runs between a job's supervisor and the job, on the path of every job start, so it is
// small C (about a millisecond; `allotd exec-as` does the same in Swift and is the fallback). As root it
// joins the job's cgroup and drops to the owner's ids; then, as the owner, it opens the owner's output
// file, enters the working directory, resets the signal state and execs the command. A failure before
// the exec is written to the report file (opened first, closed by the exec) and ends it with 126 or 127.
//
// allot-exec [--uid N --gid N] [--groups A,B] [--workdir D] [--output P] [--cgroup C] [--report R] -- CMD…
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int report_fd = -1;

static int fail(int code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dprintf(2, "allot: %s\n", msg);
    if (report_fd >= 0) dprintf(report_fd, "allot: %s\n", msg);
    return code;
}

int main(int argc, char **argv) {
    const char *uid_s = NULL, *gid_s = NULL, *groups_s = NULL, *workdir = NULL, *output = NULL, *cgroup = NULL,
               *report = NULL;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) { i++; break; }
        if (i + 1 >= argc) { dprintf(2, "allot-exec: %s needs a value\n", argv[i]); return 2; }
        const char *v = argv[++i];
        if (strcmp(argv[i - 1], "--uid") == 0) uid_s = v;
        else if (strcmp(argv[i - 1], "--gid") == 0) gid_s = v;
        else if (strcmp(argv[i - 1], "--groups") == 0) groups_s = v;
        else if (strcmp(argv[i - 1], "--workdir") == 0) workdir = v;
        else if (strcmp(argv[i - 1], "--output") == 0) output = v;
        else if (strcmp(argv[i - 1], "--cgroup") == 0) cgroup = v;
        else if (strcmp(argv[i - 1], "--report") == 0) report = v;
        else { dprintf(2, "allot-exec: unknown option %s\n", argv[i - 1]); return 2; }
    }
    if (i >= argc) { dprintf(2, "allot-exec: give the command after --\n"); return 2; }
    if ((uid_s == NULL) != (gid_s == NULL)) { dprintf(2, "allot-exec: give --uid and --gid together\n"); return 2; }
    if (report) report_fd = open(report, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (cgroup) {
        char path[4096];
        snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
            return fail(126, "cannot join the job's cgroup %s: %s", cgroup, strerror(errno));
        close(fd);
    }
    if (uid_s) {
        uid_t uid = (uid_t)strtoul(uid_s, NULL, 10);
        gid_t gid = (gid_t)strtoul(gid_s, NULL, 10);
        gid_t groups[1024];
        size_t n = 0;
        if (groups_s) {
            const char *p = groups_s;
            while (*p && n < 1024) {
                char *end;
                unsigned long g = strtoul(p, &end, 10);
                if (end == p) break;
                groups[n++] = (gid_t)g;
                p = *end == ',' ? end + 1 : end;
            }
        }
        if (setgroups(n, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            return fail(126, "cannot switch to uid %u: %s", uid, strerror(errno));
    }
    if (output) {
        int fd = open(output, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0) return fail(126, "cannot open the output file %s: %s", output, strerror(errno));
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2) close(fd);
    }
    if (workdir && chdir(workdir) != 0)
        return fail(126, "cannot enter the working directory %s: %s", workdir, strerror(errno));
    // As a fresh process: no signal blocked, none ignored.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
    execvp(argv[i], &argv[i]);
    return fail(errno == ENOENT ? 127 : 126, "cannot run %s: %s", argv[i], strerror(errno));
}
