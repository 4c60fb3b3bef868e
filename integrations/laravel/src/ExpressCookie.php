<?php

namespace TokenMigration\Laravel;

use Illuminate\Http\Request;

/**
 * The legacy cookie exactly as the browser sent it. PHP's $_COOKIE URL-decodes values and EncryptCookies
 * replaces any cookie it cannot decrypt with null, so the value is taken from the raw Cookie header.
 */
final class ExpressCookie
{
    public static function fromRequest(Request $request, string $name): ?string
    {
        $header = (string) $request->headers->get('cookie', '');
        foreach (explode(';', $header) as $pair) {
            $parts = explode('=', $pair, 2);
            if (count($parts) === 2 && trim($parts[0]) === $name) {
                $value = trim($parts[1]);
                if (strlen($value) >= 2 && $value[0] === '"' && substr($value, -1) === '"') {
                    $value = substr($value, 1, -1);
                }

                return $value === '' ? null : $value;
            }
        }

        return null;
    }
}
