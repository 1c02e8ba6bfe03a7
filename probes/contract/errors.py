"""The exceptions posdiag raises on purpose, and the exit code each one means.

    PosdiagError            exit 2 unless said otherwise
    ├── ConfigError         a config or knowledge-base file is malformed (names file and key)
    │   └── ConfigErrors    every problem of one config at once (the first one's fields)
    ├── UsageError          the command line asks for something that does not exist
    └── DeviceError         a transport could not be opened or used (translated from pyserial,
                            pyusb, sockets in one place per library)
"""


class PosdiagError(Exception):
    exit_code = 2


class ConfigError(PosdiagError):
    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"config error in {where}: {problem}")


class ConfigErrors(ConfigError):
    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.source, first.key, first.problem)
        self.errors = errors
        if len(errors) > 1:
            self.args = (f"{len(errors)} config errors:\n" + "\n".join(f"  {e}" for e in errors),)


class UsageError(PosdiagError):
    pass


class DeviceError(PosdiagError):
    pass
