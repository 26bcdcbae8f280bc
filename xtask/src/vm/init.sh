#!/bin/busybox sh
# PID 1 of the SafeClaw test VM (packed by xtask/src/vm/initramfs.rs). Mounts the host's root read-only over
# virtiofs, gives it the guest's own kernel filesystems and RAM-backed /tmp /run /root /etc, then runs the
# command xtask wrote into its run directory, chrooted, prints its exit status in a marker line and powers off.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "safeclaw-vm: error: $*"
    poweroff -f
    sleep 60
}

mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev ||
    fail "mounting proc, sysfs or devtmpfs in the initramfs failed"

RUN=
for arg in $(cat /proc/cmdline); do
    case $arg in safeclaw.run=*) RUN=${arg#safeclaw.run=} ;; esac
done
[ -n "$RUN" ] || fail "no safeclaw.run= on the kernel command line"

# The virtio and virtiofs modules this kernel lacks built in, numbered in load order.
for module in /lib/modules/*.ko; do
    [ -e "$module" ] || continue
    insmod "$module" || fail "insmod $module failed"
done

# ALWAYS read-only: virtiofsd runs as host root, so a writable mount would let the guest write the host.
mount -t virtiofs -o ro hostroot /newroot || fail "mounting the host root (virtiofs tag hostroot) failed"
# A second view of the host root that the tmpfs mounts below do not cover.
mount --bind /newroot /hostview && mount -o remount,bind,ro /hostview || fail "binding the host root failed"
. "/hostview$RUN/config" || fail "cannot read $RUN/config"

N=/newroot
mount -t proc proc $N/proc && mount -t sysfs sysfs $N/sys && mount -t devtmpfs devtmpfs $N/dev &&
    mount -t securityfs securityfs $N/sys/kernel/security && mount -t bpf bpf $N/sys/fs/bpf &&
    mount -t cgroup2 cgroup2 $N/sys/fs/cgroup && mount -t tracefs tracefs $N/sys/kernel/tracing &&
    mkdir -p $N/dev/shm $N/dev/pts && mount -t tmpfs -o mode=1777 tmpfs $N/dev/shm &&
    mount -t devpts devpts $N/dev/pts ||
    fail "mounting the guest's kernel filesystems failed"

# Writable, in RAM: scratch, HOME, and a copy of the host's /etc (xtask's snapshot) so that writes there
# reach the LSM hooks instead of failing early with EROFS. (Unpacked from inside $N/etc: each path walk
# through /newroot would cost a virtiofs round trip.)
mount -t tmpfs -o mode=1777 tmpfs $N/tmp && mount -t tmpfs -o mode=755 tmpfs $N/run &&
    mount -t tmpfs -o mode=700 tmpfs $N/root && mount -t tmpfs -o mode=755 tmpfs $N/etc &&
    tar -xf "/hostview$RUN/etc.tar" -C $N/etc ||
    fail "mounting the guest's tmpfs directories failed"

# The checkout and the toolchains stay visible (read-only) even where they lie under a tmpfs above,
# say a checkout in /root or /tmp, or ~/.cargo.
while IFS= read -r dir; do
    mkdir -p "$N$dir" && mount --bind "/hostview$dir" "$N$dir" || fail "binding $dir into the guest failed"
done <"/hostview$RUN/binds"

# mkdir: the directory may lie in one of the tmpfs mounts above, e.g. under /tmp.
if [ -n "$OUT_DIR" ]; then
    mkdir -p "$N$OUT_DIR" && mount -t virtiofs safeclaw-out "$N$OUT_DIR" || fail "mounting the --out directory $OUT_DIR failed"
fi

mkdir -p $N/run/safeclaw-vm && cp "/hostview$RUN/command.sh" $N/run/safeclaw-vm/command.sh ||
    fail "cannot copy the command script"
ip link set lo up || fail "cannot bring up the loopback interface"
hostname safeclaw-vm

echo "safeclaw-vm-start $NONCE"
env -i /bin/chroot $N /bin/sh /run/safeclaw-vm/command.sh </dev/null
status=$?
sync
echo "safeclaw-vm-exit $NONCE $status"
poweroff -f
sleep 60
