// Package quota is what each user may have: the limits as the settings file gives them
// (a default and per-user overrides), the error a request past one gets (of errdefs'
// ResourceExhausted class, with its limit, use and ask, which daemon/api turns into
// QuotaExceeded), and the reservations that hold a quota between the check and the
// records it will be counted from, so that concurrent requests cannot pass it together.
package quota
