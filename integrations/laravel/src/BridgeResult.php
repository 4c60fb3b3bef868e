<?php

namespace TokenMigration\Laravel;

/** What the bridge route answered, reduced to what the middleware acts on. */
final class BridgeResult
{
    public const BRIDGED = 'bridged';          // 200: switch to session_id
    public const REFUSED = 'refused';          // 401 invalid_grant: not a valid Express session
    public const OFF = 'off';                  // 403 bridge_off: exchange switched off or token-only mode
    public const THROTTLED = 'throttled';      // 429 slow_down
    public const UNAVAILABLE = 'unavailable';  // timeout, connection refused, 5xx, a signature refused, junk

    private function __construct(
        public readonly string $outcome,
        public readonly ?string $sessionId = null,
        public readonly ?int $userId = null,
        public readonly int $retryAfter = 0,
        public readonly string $detail = '',
    ) {
    }

    public static function bridged(string $sessionId, int $userId): self
    {
        return new self(self::BRIDGED, $sessionId, $userId);
    }

    public static function refused(): self
    {
        return new self(self::REFUSED);
    }

    public static function off(string $detail): self
    {
        return new self(self::OFF, detail: $detail);
    }

    public static function throttled(int $retryAfter): self
    {
        return new self(self::THROTTLED, retryAfter: $retryAfter);
    }

    public static function unavailable(string $detail): self
    {
        return new self(self::UNAVAILABLE, detail: $detail);
    }
}
