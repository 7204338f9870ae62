# bench/run.sh: the disk a cell needs (basebackup, pgbackrest, reflink) and the XFS filesystem
# with reflink of a reflink cell.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

# --- the filesystem of a cell -------------------------------------------------------------------
free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
pgbr_repo_mb() { echo $(( $1 * 7 / 10 * RUNS )); }  # BENCH_RUNS full backups, lz4 (half is random bytes)
# basebackup: the data, BENCH_RUNS snapshots, a clone, the parked target, the data directory set
# aside by the rollback, the WAL, and pgBackRest's repository
basebackup_need_mb() { echo $(( $1 * 11 / 10 * (5 + RUNS) + $(pgbr_repo_mb "$1") + 2048 )); }
# pgbackrest (the agent's backend): the data, the dry-run clone, the parked target and the data
# directory set aside, all restored from the sandbox's repository; that repository (the archived WAL
# of the load and of the runs, one full backup, small incremental ones); pgBackRest's own repository
pgbackrest_need_mb() { echo $(( $1 * 11 / 10 * 5 + $1 * 7 / 10 + $(pgbr_repo_mb "$1") + 2048 )); }
# reflink: an XFS filesystem with reflink on a loop device, sized for the data, its copies and the
# WAL (sparse: only what is written takes space). Sets FSROOT to the mount point, or REFLINK_WHY.
# The image is capped to the free space left beside pgBackRest's repository, so that if the copies
# turn out not to share extents it is this filesystem that fills up, never the machine's.
REFLINK_WHY=""
make_reflink_fs() {
  local mb="$1" img="$W/xfs-$1.img" mnt="$W/xfs-$1"
  [ "$(id -u)" = 0 ] || { REFLINK_WHY="not root: making an XFS filesystem on a loop device needs root"; return 1; }
  command -v mkfs.xfs >/dev/null 2>&1 || ensure_package mkfs.xfs xfsprogs
  local img_mb=$(( mb * 7 / 2 + 4096 )) room=$(( $(free_mb "$W") - $(pgbr_repo_mb "$mb") - 2048 ))
  [ "$img_mb" -le "$room" ] || img_mb="$room"
  [ "$img_mb" -ge $(( mb * 22 / 10 + 2048 )) ] || {
    REFLINK_WHY="not enough disk for a $mb MB cell: $(free_mb "$W") MB free under $W"; return 1; }
  truncate -s "${img_mb}M" "$img"
  mkfs.xfs -q -f -m reflink=1 "$img" >/dev/null 2>&1 || { REFLINK_WHY="mkfs.xfs -m reflink=1 failed"; rm -f "$img"; return 1; }
  mkdir -p "$mnt"
  mount -o loop,noatime "$img" "$mnt" 2>"$W/mount.err" || {
    REFLINK_WHY="mount -o loop failed: $(head -1 "$W/mount.err")"; rm -f "$img"; return 1; }
  MOUNTS+=("$mnt")
  chown "$PG_OS_USER" "$mnt"; chmod 0755 "$mnt"
  head -c 1048576 /dev/zero >"$mnt/probe" && cp --reflink=always "$mnt/probe" "$mnt/probe.clone" 2>/dev/null || {
    REFLINK_WHY="cp --reflink=always fails on the XFS filesystem"; return 1; }
  rm -f "$mnt/probe" "$mnt/probe.clone"
  FSROOT="$mnt"
}
unmount_fs() {
  local d="$1" rest=() m
  for _ in 1 2 3 4 5; do umount "$d" 2>/dev/null && break; sleep 1; done
  mountpoint -q "$d" && { say "$d is busy; detaching it lazily"; umount -l "$d"; }
  for m in "${MOUNTS[@]}"; do [ "$m" = "$d" ] || rest+=("$m"); done
  MOUNTS=("${rest[@]}")
}
