<?php

use Illuminate\Http\Request;
use Illuminate\Support\Facades\Auth;
use Illuminate\Support\Facades\Route;

// The page the browser test reads: who Laravel thinks is logged in.
Route::get('/', function (Request $request) {
    $user = Auth::user();
    $who = $user
        ? '<p id="who">logged in as ' . e($user->name) . '</p>'
          . '<form method="post" action="/logout"><input type="hidden" name="_token" value="' . e(csrf_token()) . '">'
          . '<button id="logout">Log out</button></form>'
        : '<p id="who">not logged in</p>';
    // For whoever looks at the test's screenshots: which cookies this request carried (names only).
    $names = array_filter(array_map(fn ($pair) => trim(explode('=', $pair, 2)[0]),
        explode(';', (string) $request->headers->get('cookie', ''))));
    $who .= '<p id="cookies" style="color: #555">cookies this request carried: '
        . e($names ? implode(', ', $names) : '(none)') . '</p>';

    return response('<!doctype html><html><head><title>Laravel app</title></head>'
        . '<body style="font-family: sans-serif"><h1>Laravel app (bridge installed)</h1>' . $who . '</body></html>');
});

Route::post('/logout', function (Request $request) {
    Auth::guard('web')->logout();
    $request->session()->invalidate();
    $request->session()->regenerateToken();

    return redirect('/');
});
