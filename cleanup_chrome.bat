@echo off
rem cleanup_chrome.bat: clean up what embassy_cleanup sessions left behind, safely.
rem
rem With embassy_cleanup installed, this hands over to "embassy-cleanup clean"
rem and passes every flag through (see "embassy-cleanup clean --help"); its
rem exit status is that of "embassy-cleanup clean".
rem
rem Without it, a small fallback that only removes session dirs named
rem embassy_cleanup-* in %TEMP%. Windows refuses to delete files a live process
rem holds open, so a live session's dir stays. The fallback kills NO process:
rem finding a session's processes safely needs the package.
rem
rem Not tested in CI (CI runs on Linux); reviewed by hand and linted with blinter.
rem Usage: cleanup_chrome.bat [--dry-run] [other flags of embassy-cleanup clean]
setlocal EnableExtensions

rem Each hand-over runs outside any parenthesised block and is followed by
rem "exit /b %ERRORLEVEL%" on a line of its own: cmd.exe expands %ERRORLEVEL%
rem when it parses a line or a whole block, so inside a block it would still
rem hold the status of the command before the block (blinter W071).
where embassy-cleanup >nul 2>nul
if errorlevel 1 goto try_py
embassy-cleanup clean %*
exit /b %ERRORLEVEL%

rem try_py: no embassy-cleanup on PATH; try the py launcher.
:try_py
where py >nul 2>nul
if errorlevel 1 goto fallback
py -c "import embassy_cleanup" >nul 2>nul
if errorlevel 1 goto fallback
py -m embassy_cleanup clean %*
exit /b %ERRORLEVEL%

rem fallback: no package; remove session dirs only. No SET here: in a .bat
rem file SET does not reset ERRORLEVEL (blinter W028).
:fallback
if /i "%~1"=="--all" (
    echo error: --all needs the embassy_cleanup package 1>&2
    exit /b 2
)
dir /b /a:d "%TEMP%\embassy_cleanup-*" >nul 2>nul
if errorlevel 1 (
    echo nothing to clean
    goto note
)
rem Remove each session dir; one that a live process holds open stays.
for /d %%D in ("%TEMP%\embassy_cleanup-*") do (
    if /i "%~1"=="--dry-run" (
        echo would remove %%~fD
    ) else (
        rmdir /s /q "%%~fD" 2>nul
        if exist "%%~fD" (
            echo kept %%~fD: in use by a live session
        ) else (
            echo removed %%~fD
        )
    )
)

rem note: the same last line on every path of the fallback.
:note
echo note: without the embassy_cleanup package no process is killed; pip install embassy_cleanup
exit /b 0
