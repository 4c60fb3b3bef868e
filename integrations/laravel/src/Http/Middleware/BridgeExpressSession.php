<?php

namespace TokenMigration\Laravel\Http\Middleware;

use Closure;
use Illuminate\Contracts\Auth\Factory as AuthFactory;
use Illuminate\Contracts\Cache\Factory as CacheFactory;
use Illuminate\Contracts\Cache\Repository;
use Illuminate\Http\Request;
use Psr\Log\LoggerInterface;
use TokenMigration\Laravel\BridgeClient;
use TokenMigration\Laravel\BridgeResult;
use TokenMigration\Laravel\ExpressCookie;

/**
 * Dual mode's browser hand-off. A request with no authenticated user that carries the legacy app's
 * connect.sid asks the bridge route for the user's migrated Laravel session and continues, on this same
 * request, inside it: no redirect, no login prompt, and StartSession puts that session's cookie on the
 * response. Anything but a 200 leaves an ordinary guest request (never an error page).
 *
 * Place it in the `web` group right after StartSession (it needs the session, and a CSRF check after it
 * sees the bridged session).
 */
class BridgeExpressSession
{
    public const OFF_KEY = 'tokenmigration:bridge:off';
    public const REFUSED_PREFIX = 'tokenmigration:bridge:refused:';

    public function __construct(
        private AuthFactory $auth,
        private CacheFactory $cache,
        private LoggerInterface $log,
        private ?BridgeClient $client,
        private array $config,
    ) {
    }

    public function handle(Request $request, Closure $next)
    {
        $this->bridge($request);

        return $next($request);
    }

    private function bridge(Request $request): void
    {
        if (!$this->client || !filter_var($this->config['enabled'] ?? true, FILTER_VALIDATE_BOOL)) {
            return;
        }
        if (!$request->hasSession()) {
            $this->log->warning('tokenmigration bridge: no session on the request; put the middleware after StartSession');

            return;
        }
        $guard = $this->auth->guard($this->config['guard'] ?? 'web');
        if ($guard->check()) {
            return;
        }
        $cookie = ExpressCookie::fromRequest($request, $this->config['express_cookie'] ?? 'connect.sid');
        if ($cookie === null) {
            return;
        }
        $cache = $this->store();
        if ($cache->get(self::OFF_KEY)) {
            return;
        }
        // Only a digest of the cookie is kept: the cache must not become a store of live session cookies.
        $refusedKey = self::REFUSED_PREFIX . hash('sha256', $cookie);
        if ($cache->get($refusedKey)) {
            return;
        }

        $result = $this->client->bridge($cookie, $request->ip());
        switch ($result->outcome) {
            case BridgeResult::BRIDGED:
                $this->switchSession($request, $result);
                if (!$guard->check()) {
                    $this->log->warning('tokenmigration bridge: the migrated session does not log in', [
                        'user_id' => $result->userId,
                    ]);
                }
                break;
            case BridgeResult::REFUSED:
                $cache->put($refusedKey, true, max(1, (int) ($this->config['refused_seconds'] ?? 600)));
                break;
            case BridgeResult::THROTTLED:
                $cache->put($refusedKey, true, $result->retryAfter);
                break;
            case BridgeResult::OFF:
                $cache->put(self::OFF_KEY, true, max(1, (int) ($this->config['off_seconds'] ?? 60)));
                $this->log->info('tokenmigration bridge: switched off by the service; not calling for a while', [
                    'detail' => $result->detail,
                ]);
                break;
            default:
                $this->log->warning('tokenmigration bridge: bridge route unavailable; guest request', [
                    'detail' => $result->detail,
                ]);
        }
    }

    private function switchSession(Request $request, BridgeResult $result): void
    {
        $session = $request->session();
        // The guest session this request started with held nothing of the user's: drop its attributes so
        // the migrated session's (login key, CSRF token) are the ones loaded, then read that row.
        $session->flush();
        $session->setId($result->sessionId);
        $session->start();
    }

    private function store(): Repository
    {
        return $this->cache->store($this->config['cache_store'] ?? null);
    }
}
