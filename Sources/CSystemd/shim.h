// libsystemd (Debian's libsystemd-dev): sd_notify, sd_listen_fds, sd_watchdog_enabled and sd_journal_sendv.
#ifndef ALLOT_CSYSTEMD_SHIM_H
#define ALLOT_CSYSTEMD_SHIM_H
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#endif
