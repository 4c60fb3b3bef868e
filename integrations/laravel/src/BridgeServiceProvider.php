<?php

namespace TokenMigration\Laravel;

use Illuminate\Auth\Events\Logout;
use Illuminate\Contracts\Auth\Factory as AuthFactory;
use Illuminate\Contracts\Cache\Factory as CacheFactory;
use Illuminate\Cookie\CookieJar;
use Illuminate\Support\ServiceProvider;
use Psr\Log\LoggerInterface;
use TokenMigration\Laravel\Http\Middleware\BridgeExpressSession;

class BridgeServiceProvider extends ServiceProvider
{
    public function register(): void
    {
        $this->mergeConfigFrom(__DIR__ . '/../config/tokenmigration.php', 'tokenmigration');

        $this->app->singleton(BridgeClient::class, function ($app) {
            $config = $app['config']->get('tokenmigration.bridge', []);
            if (empty($config['endpoint'])) {
                return null;
            }

            return new BridgeClient(
                (string) $config['endpoint'],
                (string) ($config['region'] ?? 'us-east-1'),
                (float) ($config['timeout'] ?? 2.0),
                BridgeClient::staticCredentials($config['credentials'] ?? []),
            );
        });

        $this->app->bind(BridgeExpressSession::class, fn ($app) => new BridgeExpressSession(
            $app->make(AuthFactory::class),
            $app->make(CacheFactory::class),
            $app->make(LoggerInterface::class),
            $app->make(BridgeClient::class),
            $app['config']->get('tokenmigration.bridge', []),
        ));
    }

    public function boot(): void
    {
        if ($this->app->runningInConsole()) {
            $this->publishes([
                __DIR__ . '/../config/tokenmigration.php' => $this->app->configPath('tokenmigration.php'),
            ], 'tokenmigration-config');
        }
        $this->app['router']->aliasMiddleware('tokenmigration.bridge', BridgeExpressSession::class);

        // Logging out of Laravel must stick: while the browser still held connect.sid, the next request
        // would carry it across again. The Express session itself is left alone (rollback may need it).
        $this->app['events']->listen(Logout::class, function () {
            $name = $this->app['config']->get('tokenmigration.bridge.express_cookie', 'connect.sid');
            $this->app->make(CookieJar::class)->queue($this->app->make(CookieJar::class)->forget($name));
        });
    }
}
