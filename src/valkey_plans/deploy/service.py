"""One service runner per init system, behind one small interface.

pyinfra's service operations share one `handle_service_control`
(pyinfra/operations/util/service.py). Every valkey-server this deploy keeps running
(each instance, each Sentinel, each cluster node; on a Mac the `brew services` instance
and the daemonized ones) goes through one `ServiceRunner` the same way:

    runner = service_runner(Service(label="valkey-server cache", ...), init)
    runner.running()                   # start it if it is down (and enable it: systemd)
    runner.restart_if([config, repl])  # restart it only for a changed file

The init system is a fact of the host (`init_system`): systemd when it is PID 1,
start-stop-daemon otherwise (containers, WSL, CI: pyinfra's `server.service` would pick
systemd there and fail), Homebrew on macOS. The operations below are fact-gated like
pyinfra's own: they yield commands only when the service's state differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Os
from pyinfra.operations import systemd, sysvinit

from valkey_plans.deploy.facts import BrewServiceRunning, HasSystemd, RunningPid
from valkey_plans.deploy.restarts import settled_restart, systemctl_restart

VALKEY_SERVER = "/usr/bin/valkey-server"

#: Every stop without systemd escalates the same way: SIGTERM, up to 60 s for Valkey to
#: save and exit, then SIGKILL, up to 5 s more, then the stop fails.
TERM_SECONDS, KILL_SECONDS = 60, 5
STOP_RETRY = f"TERM/{TERM_SECONDS}/KILL/{KILL_SECONDS}"

#: A unit started right after it stopped can fail once while systemd still tears down
#: its old cgroup (status=219/CGROUP, seen in containers); a second try starts it.
SYSTEMD_RETRY = {"_retries": 2, "_retry_delay": 2}


class Init(StrEnum):
    """The init systems a runner exists for."""

    SYSTEMD = "systemd"
    START_STOP_DAEMON = "start-stop-daemon"
    BREW = "brew"


def init_system() -> Init:
    """This host's init system. Read it once per deploy: pyinfra 3 runs a fact's command
    on every `get_fact`."""
    if host.get_fact(Os) == "Darwin":
        return Init.BREW
    return Init.SYSTEMD if host.get_fact(HasSystemd) else Init.START_STOP_DAEMON


@dataclass(frozen=True)
class Service:
    """One valkey-server the deploy keeps running: an instance or a Sentinel.

    + label: what operation names call it ("valkey-server cache", "Sentinel main")
    + config: its config file
    + pidfile: the pidfile that config names
    + unit: its systemd unit (systemd hosts)
    + run_dir: runtime directory of pidfile and socket (start-stop-daemon creates it, as
      systemd's RuntimeDirectory would)
    + socket: its unix socket: start-stop-daemon waits for it after a start; a restart
      asks it whether the instance is settled, before and after (`settled_restart`)
    + logfile: its log, whose tail a failed start-stop-daemon start shows
    + extra_args: more valkey-server arguments, the deploy's own text (`--sentinel`)
    + server: the valkey-server program
    + formula: Homebrew formula whose `brew services` runs it (macOS; None: daemonized)
    + cluster_node: a cluster node, settled only while it sees the whole cluster
    + auth_file: admin login file for a restart's settled checks, used when it exists and
      the running instance takes it (None: never log in)
    + env_file: a program that is not valkey-server and reads its settings (a password
      among them) from this root-only environment file, never from its arguments:
      systemd's unit names it (EnvironmentFile=); start-stop-daemon gets it from a root
      shell that reads it first (`env_daemon`). `config` is unused then
    + user: the account it runs as without systemd (the unit says it under systemd)
    """

    label: str
    config: str
    pidfile: str
    unit: str | None = None
    run_dir: str | None = None
    socket: str | None = None
    logfile: str | None = None
    extra_args: str = ""
    server: str = VALKEY_SERVER
    formula: str | None = None
    cluster_node: bool = False
    auth_file: str | None = None
    env_file: str | None = None
    user: str = "valkey"

    def needs(self, field: str, runner: str) -> str:
        """The value of `field`, which `runner` cannot do without: loud when it is missing."""
        value = getattr(self, field)
        if not value:
            raise ValueError(f"{self.label}: {runner} needs the service's {field}")
        return value

    @property
    def settles(self) -> bool:
        """A valkey-server reached on its socket: its restarts wait until it is settled."""
        return bool(self.socket) and self.server == VALKEY_SERVER and not self.env_file


def changed(*ops: OperationMeta | None) -> bool:
    """Whether any of these operations (None: not run) changed the host."""
    return any(op is not None and op.did_change() for op in ops)


class ServiceRunner(ABC):
    """How one init system keeps one Service running: `running()`, then `restart_if()`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.started: OperationMeta | None = None

    def running(self) -> OperationMeta:
        """Start the service if it is down (and enable it where the init system does)."""
        self.started = self._start()
        return self.started

    def restart_if(self, changed_ops: Sequence[OperationMeta | None]) -> OperationMeta:
        """Restart the service when one of `changed_ops` (None: not run) changed the host,
        unless `running()` has just started it: a fresh start already read the new files."""
        started = self.started
        if started is None:
            raise RuntimeError(f"{self.service.label}: call running() before restart_if()")
        return self._restart(lambda: changed(*changed_ops) and not started.did_change())

    @abstractmethod
    def stop(self) -> StringCommand:
        """A command that stops the service, a no-op when it is not running (for a file
        the service rewrites on exit, swapped in while it is down)."""

    def start(self) -> StringCommand:
        """A command that starts the service (for an operation that restarts it itself)."""
        raise ValueError(f"{self.service.label}: no start command under {type(self).__name__}")

    def restart_command(self) -> StringCommand:
        """A bounded restart of a valkey-server reached on its socket, for an operation
        that restarts it itself between its own settled waits."""
        raise ValueError(f"{self.service.label}: no restart command under {type(self).__name__}")

    @abstractmethod
    def _start(self) -> OperationMeta: ...

    @abstractmethod
    def _restart(self, when: Callable[[], bool]) -> OperationMeta: ...


class Systemd(ServiceRunner):
    """systemd as PID 1: the service's unit, started and enabled; restarted by systemctl,
    a cluster node one at a time and only while its cluster is settled."""

    @property
    def unit(self) -> str:
        return self.service.needs("unit", "systemd")

    def _start(self) -> OperationMeta:
        return systemd.service(
            name=f"{self.unit} running and enabled",
            service=self.unit,
            running=True,
            enabled=True,
            **SYSTEMD_RETRY,
        )

    def _restart(self, when: Callable[[], bool]) -> OperationMeta:
        if self.service.settles:
            return restarted_settled(self.service, self.restart_command(), when, **SYSTEMD_RETRY)
        return systemd.service(
            name=f"Restart {self.unit} for its new config",
            service=self.unit,
            restarted=True,
            **SYSTEMD_RETRY,
            _if=when,
        )

    def stop(self) -> StringCommand:
        return StringCommand("systemctl stop", QuoteString(self.unit))

    def start(self) -> StringCommand:
        return StringCommand("systemctl start", QuoteString(self.unit))

    def restart_command(self) -> StringCommand:
        return systemctl_restart(self.unit)


def restarted_settled(
    service: Service, restart: StringCommand, when: Callable[[], bool], **retry: int
) -> OperationMeta:
    """The restart of a valkey-server instance: settled before and after, bounded, one
    host at a time (`settled_restart`)."""
    return settled_restart(
        name=f"Restart {service.label} for its new config (settled, one host at a time)",
        restart=restart,
        socket=service.needs("socket", "a settled restart"),
        auth_file=service.auth_file,
        cluster=service.cluster_node,
        _serial=True,
        _if=when,
        **retry,
    )


class _OperationRunner(ServiceRunner):
    """A runner whose start and restart are one of this module's operations."""

    start_name = "{label} running"

    @abstractmethod
    def _operation(self, restarted: bool, **global_arguments: object) -> OperationMeta: ...

    def _start(self) -> OperationMeta:
        return self._operation(False, name=self.start_name.format(label=self.service.label))

    def _restart(self, when: Callable[[], bool]) -> OperationMeta:
        label = self.service.label
        return self._operation(True, name=f"Restart {label} for its new config", _if=when)


class StartStopDaemon(_OperationRunner):
    """No systemd as PID 1 (containers, WSL, CI): start-stop-daemon and a pidfile."""

    start_name = "{label} running (no systemd: start-stop-daemon)"

    def _restart(self, when: Callable[[], bool]) -> OperationMeta:
        if not self.service.settles:
            return super()._restart(when)
        return restarted_settled(self.service, self.restart_command(), when)

    def restart_command(self) -> StringCommand:
        s = self.service
        waited = StringCommand(self.start(), _socket_wait(s.needs("socket", "restart"), s.logfile))
        return StringCommand(self.stop(), "&&", waited)

    def _operation(self, restarted: bool, **global_arguments: object) -> OperationMeta:
        s = self.service
        if s.env_file:
            return env_daemon(
                program=s.server,
                env_file=s.env_file,
                pidfile=s.pidfile,
                run_dir=s.needs("run_dir", "start-stop-daemon"),
                user=s.user,
                restarted=restarted,
                **global_arguments,
            )
        return daemon(
            config=s.config,
            pidfile=s.pidfile,
            run_dir=s.needs("run_dir", "start-stop-daemon"),
            restarted=restarted,
            socket=s.socket,
            logfile=s.logfile,
            extra_args=s.extra_args,
            server=s.server,
            **global_arguments,
        )

    def stop(self) -> StringCommand:
        return _daemon_stop(self.service.pidfile, self.service.server)

    def start(self) -> StringCommand:
        s = self.service
        run_dir = s.needs("run_dir", "start-stop-daemon")
        return _daemon_start(s.config, s.pidfile, run_dir, s.user, s.extra_args, s.server)


class BrewServices(_OperationRunner):
    """macOS: the one service `brew services` runs per formula."""

    start_name = "{label} under brew services"

    @property
    def formula(self) -> str:
        return self.service.needs("formula", "brew services")

    def _operation(self, restarted: bool, **global_arguments: object) -> OperationMeta:
        return brew_service(formula=self.formula, restarted=restarted, **global_arguments)

    def stop(self) -> StringCommand:
        return _brew_services("stop", self.formula)


class Background(_OperationRunner):
    """macOS, any instance but the `brew services` one: daemonized from its config."""

    def _operation(self, restarted: bool, **global_arguments: object) -> OperationMeta:
        s = self.service
        return background_server(
            server=s.server,
            config=s.config,
            pidfile=s.pidfile,
            restarted=restarted,
            **global_arguments,
        )

    def stop(self) -> StringCommand:
        return StringCommand(
            "pid=$(cat",
            QuoteString(self.service.pidfile),
            '2>/dev/null) && kill -0 "$pid" 2>/dev/null || exit 0;',
            _stopped('"$pid"'),
        )


def service_runner(service: Service, init: Init) -> ServiceRunner:
    """The runner of `service` on a host whose init system is `init` (see `init_system`)."""
    if init is Init.BREW:
        return BrewServices(service) if service.formula else Background(service)
    return Systemd(service) if init is Init.SYSTEMD else StartStopDaemon(service)


def package_service_off(package: str, init: Init, why: str = "") -> None:
    """The package's own default service (Debian starts it on install) is off and
    disabled: the plan's instances run under their own units. `why` ends the name."""
    if init is Init.SYSTEMD:
        systemd.service(
            name=f"The package's default {package}.service is off{why}",
            service=f"{package}.service",
            running=False,
            enabled=False,
        )
    else:
        sysvinit.service(
            name=f"The package's default {package} init script is off{why}",
            service=package,
            running=False,
            enabled=False,
        )


# --- the operations of the runners that pyinfra has none for ---------------------------


def _service_control(
    is_running: bool,
    restarted: bool,
    start: StringCommand,
    restart: list[StringCommand],
    running_note: str,
) -> Generator[StringCommand, None, None]:
    """This module's `handle_service_control`: start what is down, restart what runs only
    when asked, otherwise nothing (`host.noop(running_note)`)."""
    if not is_running:
        yield start
    elif restarted:
        yield from restart
    else:
        host.noop(running_note)


@operation()
def daemon(
    config: str,
    pidfile: str,
    run_dir: str,
    restarted: bool = False,
    user: str = "valkey",
    socket: str | None = None,
    logfile: str | None = None,
    extra_args: str = "",
    server: str = VALKEY_SERVER,
) -> Generator[StringCommand, None, None]:
    """
    Run one valkey-server without systemd: start-stop-daemon, the valkey user, a pidfile.

    Used where PID 1 is not systemd (containers, WSL, CI), so the same instance
    config converges there too.

    + config: the instance's config file
    + pidfile: the pidfile that config names
    + run_dir: runtime directory holding pidfile and unix socket (created as systemd would)
    + restarted: restart it if it runs (use with `_if=`, see `ServiceRunner.restart_if`)
    + user: the account valkey-server runs as
    + socket: wait for this unix socket after a start (what systemd's Type=notify
      gives the systemd path), and fail with the log's tail if it never appears
    + logfile: the instance's log, shown when the start fails
    + extra_args: more valkey-server arguments, the deploy's own shell text, never plan
      data (`--sentinel` runs a Sentinel)
    + server: the valkey-server program

    **Example:**

    .. code:: python

        daemon(
            name="Valkey cache (no systemd)",
            config="/etc/valkey/valkey-cache.conf",
            pidfile="/run/valkey-cache/valkey-server.pid",
            run_dir="/run/valkey-cache",
        )
    """
    start = _daemon_start(config, pidfile, run_dir, user, extra_args, server)
    if socket:
        start = StringCommand(start, _socket_wait(socket, logfile))
    yield from _pidfile_control(pidfile, server, start, restarted, config)


def _pidfile_control(
    pidfile: str, program: str, start: StringCommand, restarted: bool, what: str
) -> Generator[StringCommand, None, None]:
    """`_service_control` for a start-stop-daemon process known by its pidfile: its
    restart is the one stop (`_daemon_stop`), then `start`."""
    pid = host.get_fact(RunningPid, pidfile=pidfile)
    restart = [_daemon_stop(pidfile, program), start]
    yield from _service_control(
        bool(pid), restarted, start, restart, f"{what}: running as pid {pid}"
    )


@operation()
def env_daemon(
    program: str,
    env_file: str,
    pidfile: str,
    run_dir: str,
    user: str,
    restarted: bool = False,
) -> Generator[StringCommand, None, None]:
    """
    Run a program that does not daemonize, without systemd, its settings from an env file.

    start-stop-daemon cannot read an environment file, and a password must never be an
    argument (any user sees it in `ps`): a root shell sources the root-only file, then
    execs start-stop-daemon, which passes that environment on to the program, started in
    the background as `user` with a pidfile it writes. The paths are the shell's
    positional arguments, quoted, never spliced into its script.

    + program: the program (it must stay in the foreground: start-stop-daemon forks it)
    + env_file: `KEY='value'` lines, readable by root only
    + pidfile: where start-stop-daemon keeps its pid
    + run_dir: the pidfile's directory (root, 0755)
    + user: the account the program runs as
    + restarted: restart it if it runs (use with `_if=`, see `ServiceRunner.restart_if`)

    **Example:**

    .. code:: python

        run = "/run/valkey-plans-exporter"
        env_daemon(
            "/usr/bin/prometheus-redis-exporter",
            "/var/lib/valkey-plans/exporter/cache.env",
            f"{run}/cache.pid", run, "prometheus", name="Exporter of cache (no systemd)",
        )
    """
    start = _env_daemon_start(program, env_file, pidfile, run_dir, user)
    yield from _pidfile_control(pidfile, program, start, restarted, f"{program} ({env_file})")


#: The shell behind `env_daemon`: $1 env file, $2 pidfile, $3 user, $4 program. After the
#: start it checks the program is still alive: a bad setting makes it exit at once.
_ENV_DAEMON = (
    'set -a; . "$1"; set +a; start-stop-daemon --start --quiet --background'
    ' --make-pidfile --pidfile "$2" --chuid "$3:$3" --exec "$4" || exit 1;'
    ' sleep 0.5; kill -0 "$(cat "$2")" 2>/dev/null'
    ' || { echo "$4 exited right after its start (see its env file $1)" >&2; exit 1; }'
)


def _env_daemon_start(
    program: str, env_file: str, pidfile: str, run_dir: str, user: str
) -> StringCommand:
    return StringCommand(
        "install -d -o root -g root -m 755",
        QuoteString(run_dir),
        "&& sh -c",
        QuoteString(_ENV_DAEMON),
        "sh",
        QuoteString(env_file),
        QuoteString(pidfile),
        QuoteString(user),
        QuoteString(program),
    )


def _daemon_start(
    config: str, pidfile: str, run_dir: str, user: str, extra_args: str, server: str
) -> StringCommand:
    """start-stop-daemon's start, in the run directory systemd would have created."""
    return StringCommand(
        "install -d -o",
        QuoteString(user),
        "-g",
        QuoteString(user),
        "-m 2755",
        QuoteString(run_dir),
        "&& start-stop-daemon --start --quiet --chuid",
        QuoteString(f"{user}:{user}"),
        "--pidfile",
        QuoteString(pidfile),
        "--exec",
        QuoteString(server),
        "--",
        QuoteString(config),
        "--daemonize yes",
        extra_args,
    )


def _daemon_stop(pidfile: str, server: str) -> StringCommand:
    """start-stop-daemon's stop with the one retry policy (a no-op when it is not running)."""
    return StringCommand(
        "start-stop-daemon --stop --quiet --oknodo --retry",
        STOP_RETRY,
        "--pidfile",
        QuoteString(pidfile),
        "--exec",
        QuoteString(server),
    )


def _socket_wait(socket: str, logfile: str | None) -> StringCommand:
    """Shell: `&& ` wait up to 10 s for `socket`; if it never appears, show the log's
    tail and fail (what systemd's Type=notify gives the systemd path)."""
    tail = ["tail -n 15", QuoteString(logfile), ">&2;"] if logfile else []
    return StringCommand(
        "&& i=0; while [ ! -S",
        QuoteString(socket),
        "] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done;",
        "[ -S",
        QuoteString(socket),
        "] || { echo 'valkey-server did not come up:' >&2;",
        *tail,
        "false; }",
    )


@operation()
def brew_service(formula: str, restarted: bool = False) -> Generator[StringCommand, None, None]:
    """
    Keep a formula's service started with `brew services` (restart it on request).

    + formula: Homebrew formula whose service to run
    + restarted: restart it if already started

    **Example:**

    .. code:: python

        brew_service(name="valkey under brew services", formula="valkey")
    """
    started = host.get_fact(BrewServiceRunning, formula=formula)
    start = _brew_services("start", formula)
    restart = [_brew_services("restart", formula)]
    yield from _service_control(
        started, restarted, start, restart, f"brew service {formula} is started"
    )


def _brew_services(verb: str, formula: str) -> StringCommand:
    return StringCommand("brew services", verb, QuoteString(formula))


@operation()
def background_server(
    server: str, config: str, pidfile: str, restarted: bool = False
) -> Generator[StringCommand, None, None]:
    """
    Keep one valkey-server running from its config, daemonized with a pidfile.

    + server: path of valkey-server
    + config: the instance config
    + pidfile: the pidfile the config names
    + restarted: restart it if it runs (stopped as start-stop-daemon would: see `_stopped`)

    **Example:**

    .. code:: python

        background_server(
            server="/opt/homebrew/bin/valkey-server",
            config="/opt/homebrew/etc/valkey/valkey-hosted.conf",
            pidfile="/opt/homebrew/var/run/valkey-hosted/valkey-server.pid",
        )
    """
    pid = host.get_fact(RunningPid, pidfile=pidfile)
    start = StringCommand(QuoteString(server), QuoteString(config), "--daemonize yes")
    restart = [_stopped(str(pid)), start]
    yield from _service_control(
        bool(pid), restarted, start, restart, f"{config}: running as pid {pid}"
    )


def _stopped(pid: str) -> StringCommand:
    """Shell: start-stop-daemon's `--retry TERM/60/KILL/5` where there is none (macOS):
    SIGTERM `pid` (the deploy's own text: a number, or `"$pid"`), SIGKILL it after
    TERM_SECONDS, fail if it still runs KILL_SECONDS later."""
    return StringCommand(
        f"kill {pid} && i=0 && while kill -0 {pid} 2>/dev/null; do i=$((i+1));",
        f"[ $i -eq {TERM_SECONDS * 10} ] && kill -KILL {pid};",
        f"[ $i -gt {(TERM_SECONDS + KILL_SECONDS) * 10} ] &&",
        "{ echo 'valkey-server did not stop' >&2; exit 1; }; sleep 0.1; done",
    )
