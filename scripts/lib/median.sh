# Sourced by the benchmarks that repeat each row (REPS): median_row ROW... prints the row whose
# first field (a wall time in ns) is the median; with an even count, the lower middle one.
median_row() {
    printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"
}
