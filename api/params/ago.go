package params

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseAgo reads a duration as time.ParseDuration does, plus a leading
// number of days: "7d", "1d12h". It refuses a sign: a duration back from
// now is never negative. The API's since and until and the CLI's flags
// take it.
func ParseAgo(s string) (time.Duration, error) {
	if s == "" || s[0] == '-' || s[0] == '+' {
		return 0, errors.New("not a duration")
	}
	days, rest, hasDays := strings.Cut(s, "d")
	if !hasDays {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseInt(days, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/int64(24*time.Hour) {
		return 0, errors.New("not a number of days")
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest == "" {
		return d, nil
	}
	if rest[0] == '-' || rest[0] == '+' {
		return 0, errors.New("not a duration")
	}
	more, err := time.ParseDuration(rest)
	if err != nil || d+more < d {
		return 0, errors.New("not a duration")
	}
	return d + more, nil
}
