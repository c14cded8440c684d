#!/bin/busybox sh
# The VM's /init (busybox): load the 9p modules, mount this machine's root read-only over 9p
# with writable tmpfs scratch, mount the unified cgroup hierarchy, run the host's command in a
# chroot of that root, report its exit status on the console, power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
for module in $(cat /modules/order); do
    insmod "/modules/$module.ko" || echo "v2vm: cannot load $module"
done
fail() { echo "v2vm: $1"; echo "v2vm-exit-status: 125"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 host /host || fail "no host root"
mkdir -p /ro
mount --bind /host /ro  # the host's root as it is, below the scratch mounts that follow
mount -t tmpfs -o mode=1777 tmp /host/tmp || fail "no /tmp"
mkdir -p /host/tmp/v2vm-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /host/tmp/v2vm-out || fail "no out"
mount -t tmpfs run /host/run
mount -t tmpfs -o mode=1777 vartmp /host/var/tmp
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs -o mode=1777 shm /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || fail "no cgroup2"
# A checkout under a scratch directory (a CI clone in /tmp) stays visible: v2vm.keep=PATH.
keep=$(sed -n 's/.*v2vm\.keep=\([^ ]*\).*/\1/p' /proc/cmdline)
case "$keep" in
    /tmp/*|/run/*|/var/tmp/*|/dev/shm/*)
        mkdir -p "/host$keep" && mount --bind "/ro$keep" "/host$keep" || fail "cannot show $keep";;
esac
echo "v2vm: cgroup2 controllers: $(cat /host/sys/fs/cgroup/cgroup.controllers)"
chroot /host /bin/sh /tmp/v2vm-out/command
echo "v2vm-exit-status: $?"
sync
poweroff -f
