#!/bin/sh
# Builds the local MariaDB 10.11 test image (server + mariabackup + client) from Debian
# packages, without any image registry: debootstrap a minimal Debian, install the packages,
# import the tree into Podman. Cached by tag: does nothing when the image exists.
# Usage: build-mariadb-image.sh [TAG]   (default localhost/trove-guest-mariadb:10.11)
# Needs root, podman, debootstrap; the Debian mirror is the one apt already uses.
set -eu
TAG="${1:-localhost/trove-guest-mariadb:10.11}"
if podman image exists "$TAG"; then
    echo "image $TAG exists"
    exit 0
fi
MIRROR="${DEBIAN_MIRROR:-$(grep -rhoE '^(deb|URIs:) +\[?[^]]*\]? *https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | grep -oE 'https?://[^ ]+/debian/?$' | head -n1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$(mktemp -d)"
cleanup() {
    umount "$ROOTFS/proc" 2>/dev/null || true
    rm -rf "$ROOTFS"
}
trap cleanup EXIT
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR"
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" /bin/sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mariadb-server mariadb-backup mariadb-client'
umount "$ROOTFS/proc"
chroot "$ROOTFS" /bin/sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* && : > /etc/apt/sources.list && rm -rf /etc/apt/sources.list.d/* /var/lib/mysql/* && mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld /var/lib/mysql && rm -f /usr/sbin/policy-rc.d'
tar -C "$ROOTFS" -c . | podman import --change 'CMD ["mariadbd","--user=mysql"]' - "$TAG"
echo "built $TAG"
