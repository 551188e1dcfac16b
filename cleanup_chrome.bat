@echo off
rem cleanup_chrome.bat: clean up what embassy_cleanup sessions left behind, safely.
rem
rem With embassy_cleanup installed, this hands over to "embassy-cleanup clean"
rem and passes every flag through (see "embassy-cleanup clean --help").
rem
rem Without it, a small fallback that only removes session dirs named
rem embassy_cleanup-* in %TEMP%. Windows refuses to delete files a live process
rem holds open, so a live session's dir stays. The fallback kills NO process:
rem finding a session's processes safely needs the package.
rem
rem Not tested in CI (CI runs on Linux); reviewed by hand.
rem Usage: cleanup_chrome.bat [--dry-run] [other flags of embassy-cleanup clean]
setlocal EnableExtensions

where embassy-cleanup >nul 2>nul
if %ERRORLEVEL%==0 (
    embassy-cleanup clean %*
    exit /b %ERRORLEVEL%
)
where py >nul 2>nul
if %ERRORLEVEL%==0 (
    py -c "import embassy_cleanup" >nul 2>nul
    if not errorlevel 1 (
        py -m embassy_cleanup clean %*
        exit /b %ERRORLEVEL%
    )
)

set "DRYRUN=0"
if /i "%~1"=="--dry-run" set "DRYRUN=1"
if /i "%~1"=="--all" (
    echo error: --all needs the embassy_cleanup package 1>&2
    exit /b 2
)

set "FAILED=0"
set "FOUND=0"
for /d %%D in ("%TEMP%\embassy_cleanup-*") do (
    set "FOUND=1"
    if "%DRYRUN%"=="1" (
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
if "%FOUND%"=="0" echo nothing to clean
echo note: without the embassy_cleanup package no process is killed; pip install embassy_cleanup
exit /b %FAILED%
