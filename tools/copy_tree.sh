# Sourced by tools/sanitize.sh and tools/valgrind.sh: copy_tree NAME ROOT DEST SOURCE
# copies the project at ROOT into DEST without build products, so that the extension
# used is the one the calling script builds. SOURCE: "tracked" (tracked files as in the
# working tree), "HEAD" (the last commit) or "all" (also untracked, not ignored files).
# Exits with status 2 (naming NAME) on failure.
copy_tree() {
    local name=$1 root=$2 dest=$3 source=$4
    case "$source" in
        HEAD) git -C "$root" archive HEAD | tar -x -C "$dest" || exit 2 ;;
        tracked | all)
            local ls_opts=(-c)
            [[ "$source" == all ]] && ls_opts=(-c -o --exclude-standard)
            # --ignore-failed-read: a tracked file deleted in the working tree stays deleted
            (cd "$root" && git ls-files -z "${ls_opts[@]}" |
                tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -x -C "$dest" || exit 2 ;;
        *) echo "$name: the source must be tracked, HEAD or all, got '$source'" >&2; exit 2 ;;
    esac
    # never carry a build product over
    rm -rf "$dest/build" "$dest"/fastnorm/*.so "$dest/fastnorm/_kernels.c"
}
