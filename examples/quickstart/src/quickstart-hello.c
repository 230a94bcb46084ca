/* quickstart-hello: prints the greeting that the quickstart-data package installs.
 *
 * A static x86_64 Linux program without libc (raw system calls), so the quickstart image runs
 * with `--base scratch`. The greeting's path carries conda's placeholder prefix: the installer
 * rewrites it in the binary (NUL-padded) to the image's prefix, /opt/conda, as it does for real
 * packages' compiled-in paths.
 *
 * Built by tests/it/quickstart.rs `regenerate_quickstart_channel`:
 *   cc -static -nostdlib -O2 -fno-stack-protector -fno-pie -no-pie \
 *      -fno-asynchronous-unwind-tables -Wl,--build-id=none -o quickstart-hello quickstart-hello.c
 */
static const char path[] = "/opt/anaconda1anaconda2anaconda3/share/quickstart/greeting.txt";
static const char missing[] = "quickstart-hello: cannot open the greeting\n";

static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

void _start(void) {
    char buf[4096];
    long status = 1;
    long fd = sys3(2 /* open */, (long)path, 0 /* O_RDONLY */, 0);
    if (fd >= 0) {
        long n;
        status = 0;
        while ((n = sys3(0 /* read */, fd, (long)buf, sizeof buf)) > 0) {
            sys3(1 /* write */, 1, (long)buf, n);
        }
    } else {
        sys3(1 /* write */, 2, (long)missing, sizeof missing - 1);
    }
    sys3(60 /* exit */, status, 0, 0);
    for (;;) {
    }
}
