<?php

$app = new Illuminate\Foundation\Application(dirname(__DIR__));
// The test gives each run its own writable storage (logs, file cache, compiled views).
if ($storage = getenv('APP_STORAGE')) {
    $app->useStoragePath($storage);
}
$app->singleton(Illuminate\Contracts\Http\Kernel::class, App\Http\Kernel::class);
$app->singleton(Illuminate\Contracts\Console\Kernel::class, Illuminate\Foundation\Console\Kernel::class);
$app->singleton(Illuminate\Contracts\Debug\ExceptionHandler::class, Illuminate\Foundation\Exceptions\Handler::class);

return $app;
