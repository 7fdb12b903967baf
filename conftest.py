# Root conftest: intentionally empty. The installed `debug` plugin (pytest11 entry point) does the work.
