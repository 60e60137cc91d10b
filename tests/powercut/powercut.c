/* A power-cut fault layer: an LD_PRELOAD shim that records what a disk honouring fsync would keep.
 *
 * For the tree under $POWERCUT_DIR it intercepts fsync() and fdatasync() (the only sync calls
 * SQLite's unix VFS makes; it does not use sync_file_range or msync: strace shows fdatasync on
 * the database, journal, WAL and directory, nothing else).  After each successful sync it
 * records, in the state directory $POWERCUT_DIR.powercut/ (beside the tree, not in it):
 *
 *   a regular file  -> data/<id>: the file's whole content at that moment (written to a temporary
 *                      name, then renamed: the record is never half written);
 *   a directory     -> dirs/<path>: its entries at that moment ("f<TAB>id<TAB>name" or
 *                      "d<TAB>-<TAB>name"), the names whose existence is now durable.
 *                      <path> is the directory's path under the tree, '%' and '/' escaped as
 *                      %25 and %2F; the tree itself is a lone "%" (no escaped path is).
 *
 * The first process to start under the layer records the tree as it finds it: what is on disk
 * then is durable (a fresh tree, or one a cut has just rewritten).
 *
 * <id> is the file's inode and birth time, so a record follows the file across a rename and a
 * file deleted and created again under the same name (SQLite's WAL) does not inherit the old
 * one's content, even when the inode number is reused.
 *
 * tests/powercut/__init__.py builds this shim and, once the process is killed, cuts the power:
 * it rewrites the tree from these records.
 * Not modelled (docs/power-cut.md): writes made durable without a sync (O_SYNC, O_DSYNC,
 * O_DIRECT), sync()/syncfs(), torn or reordered writes, disks whose write cache ignores flushes.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[PATH_MAX];        /* the tree, resolved; empty: the layer is off */
static char state[PATH_MAX];       /* root + ".powercut" */
/* One record at a time: of two threads syncing one file, the later copy is the one kept. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void die(const char *what, const char *path) {
    /* A record that cannot be written must not pass for a lost write: stop loudly. */
    fprintf(stderr, "powercut: %s %s: %s\n", what, path, strerror(errno));
    abort();
}

/* snprintf that refuses to truncate a path */
static void format_path(char *out, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        errno = ENAMETOOLONG;
        die("path", fmt);
    }
}

/* The path under the tree ("." for the tree itself), or NULL when `path` is outside it. */
static const char *under_root(const char *path) {
    size_t n = strlen(root);
    if (strncmp(path, root, n) != 0)
        return NULL;
    if (path[n] == '\0')
        return ".";
    return path[n] == '/' ? path + n + 1 : NULL;
}

static void file_id(const struct statx *sx, char *out, size_t size) {
    if (sx->stx_mask & STATX_BTIME)
        snprintf(out, size, "%llu-%lld.%09u", (unsigned long long)sx->stx_ino,
                 (long long)sx->stx_btime.tv_sec, sx->stx_btime.tv_nsec);
    else
        snprintf(out, size, "%llu", (unsigned long long)sx->stx_ino);
}

/* Write the whole content of `fd_from` (or the listing in `text`) to `final` through a temporary name. */
static void write_record(const char *final, int fd_from, const char *text) {
    char tmp[PATH_MAX];
    format_path(tmp, sizeof tmp, "%s.tmp.%d.%ld", final, getpid(), (long)gettid());
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0)
        die("open", tmp);
    if (text) {
        size_t len = strlen(text), done = 0;
        while (done < len) {
            ssize_t w = write(out, text + done, len - done);
            if (w < 0)
                die("write", tmp);
            done += (size_t)w;
        }
    } else {
        char buf[1 << 16];
        off_t off = 0;
        for (;;) {
            ssize_t r = pread(fd_from, buf, sizeof buf, off);
            if (r < 0)
                die("read back", final);
            if (r == 0)
                break;
            for (ssize_t done = 0; done < r;) {
                ssize_t w = write(out, buf + done, (size_t)(r - done));
                if (w < 0)
                    die("write", tmp);
                done += w;
            }
            off += r;
        }
    }
    if (close(out) || rename(tmp, final))
        die("rename", final);
}

static void record_directory(const char *path, const char *rel) {
    DIR *d = opendir(path);
    if (!d)
        die("opendir", path);
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    text[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct statx sx;
        if (statx(dirfd(d), e->d_name, AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_TYPE | STATX_BTIME, &sx))
            continue;  /* deleted meanwhile */
        char id[64];
        char kind;
        if (S_ISREG(sx.stx_mode)) {
            kind = 'f';
            file_id(&sx, id, sizeof id);
        } else if (S_ISDIR(sx.stx_mode)) {
            kind = 'd';
            strcpy(id, "-");
        } else {
            continue;  /* symlinks, sockets, fifos: not modelled */
        }
        size_t need = strlen(e->d_name) + strlen(id) + 8;
        if (len + need >= cap) {
            cap = 2 * cap + need;
            text = realloc(text, cap);
        }
        len += (size_t)snprintf(text + len, cap - len, "%c\t%s\t%s\n", kind, id, e->d_name);
    }
    closedir(d);
    char name[PATH_MAX * 3] = "%", *p = name;
    if (strcmp(rel, ".") != 0)  /* "%" -> %25, "/" -> %2F: one flat file per directory */
        for (const char *c = rel; *c; c++)
            p += *c == '%' ? sprintf(p, "%%25") : *c == '/' ? sprintf(p, "%%2F") : sprintf(p, "%c", *c);
    char final[PATH_MAX];
    format_path(final, sizeof final, "%s/dirs/%s", state, name);
    write_record(final, -1, text);
    free(text);
}

static void record_file(int fd, const char *path) {
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &sx))
        die("statx", path);
    char id[64], final[PATH_MAX], self[64];
    file_id(&sx, id, sizeof id);
    format_path(final, sizeof final, "%s/data/%s", state, id);
    /* Read through a descriptor of our own: the caller's may be write-only, and its offset stays put.
     * /proc/self/fd/N opens the same inode, even one already deleted. */
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    int in = open(self, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        die("open for reading", path);
    write_record(final, in, NULL);
    close(in);
}

static void record(int fd) {
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return;
    path[n] = '\0';
    const char *rel = under_root(path);
    if (!rel)
        return;
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_TYPE | STATX_BTIME, &sx))
        die("statx", path);
    if (S_ISDIR(sx.stx_mode)) {
        record_directory(path, rel);
    } else if (S_ISREG(sx.stx_mode)) {
        record_file(fd, path);
    }
}

/* The tree as the layer first finds it is on disk: record all of it (the first process to start). */
static int record_existing(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    const char *rel = under_root(path);
    if (type == FTW_D) {
        record_directory(path, rel);
    } else if (type == FTW_F) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die("open", path);
        record_file(fd, path);
        close(fd);
    }
    return 0;
}

__attribute__((constructor)) static void powercut_init(void) {
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    const char *dir = getenv("POWERCUT_DIR");
    if (!dir || !*dir)
        return;
    if (!realpath(dir, root))
        die("POWERCUT_DIR must exist:", dir);
    format_path(state, sizeof state, "%s.powercut", root);
    if (mkdir(state, 0700)) {
        if (errno != EEXIST)
            die("mkdir", state);
        return;  /* records of an earlier process of this run (processes start one at a time): carry on */
    }
    char sub[PATH_MAX];
    format_path(sub, sizeof sub, "%s/data", state);
    if (mkdir(sub, 0700))
        die("mkdir", sub);
    format_path(sub, sizeof sub, "%s/dirs", state);
    if (mkdir(sub, 0700))
        die("mkdir", sub);
    pthread_mutex_lock(&lock);
    if (nftw(root, record_existing, 16, FTW_PHYS))
        die("walk", root);
    pthread_mutex_unlock(&lock);
}

static int synced(int fd, int rc) {
    if (rc == 0 && root[0]) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        record(fd);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return rc;
}

int fsync(int fd) { return synced(fd, real_fsync(fd)); }
int fdatasync(int fd) { return synced(fd, real_fdatasync(fd)); }
